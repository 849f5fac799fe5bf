r"""Emotion probes on a trained ACP-Net's tower embeddings (paper Table 5), and its report.

  python launch.py --config=configs/probe.py --config.checkpoint_dir=/tmp/acp_synthetic \
      --workdir=/tmp/acp_synthetic_probe

Restores the best checkpoint of the run in checkpoint_dir (the seed with the best
validation accuracy), embeds the items of its dataset's splits (the run's split),
trains MLP probes on the training split, early-stopped on validation: images on the 8
emotions, music on the 3 classes, hidden sizes 512 and 32 (paper section 4). Writes
report.md (Tables 4 and 5, retrieval), results.json and figures/ to the workdir.

On the synthetic demo run: ~30 s on 2 CPU cores. Expect both probes well above chance.
The synthetic images show their class, not their emotion (drawn uniformly within the
class), so the image probe's ceiling is about 50% there, against 12.5% chance. The
paper reports 40.4% (images, 8 classes) and 63.56% (music, 3 classes) on IMAC.
"""

import ml_collections

from acp_jax import UserError
from configs import acp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The probe job; no variants."""
  if arg is not None:
    raise UserError(f"configs/probe.py takes no argument, got {arg!r}")
  config = ml_collections.ConfigDict()
  config.job = "probe"                  # launch.py runs probe.run
  # The trained run's workdir (required). A placeholder, so that the flag can set it.
  config.checkpoint_dir = ml_collections.config_dict.placeholder(str)
  config.dataset = ml_collections.config_dict.placeholder(str)  # None: the run's; else must match
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir; None: the run's
  config.seed_index = ml_collections.config_dict.placeholder(int)  # None: best validation seed

  # MLP probe (acp_jax/probe.py, train_probe), the same for images and music.
  config.probe = acp.probe_settings()

  config.report = acp.report_config()
  return config
