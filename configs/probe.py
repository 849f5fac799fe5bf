r"""Emotion probes on a trained ACP-Net's tower embeddings (paper Table 5), and its report.

  python launch.py --config=configs/probe.py --config.checkpoint_dir=/tmp/acp_synthetic \
      --workdir=/tmp/acp_synthetic_probe

The evaluate job (configs/evaluate.py) with the probes: restores the best checkpoint
of the run in checkpoint_dir, embeds the items of its dataset's splits with the seed of
best validation accuracy, trains MLP probes on the training split, early-stopped on
validation: images on the 8 emotions, music on the 3 classes, hidden sizes 512 and 32
(paper section 4); `--config.evals.probes.*` sets them. Writes report.md and
report.html (Tables 4 and 5, retrieval), results.json, figures/ and gallery/ to the
workdir.

On the synthetic demo run: ~30 s on 2 CPU cores. Expect both probes well above chance.
The synthetic images show their class, not their emotion (drawn uniformly within the
class), so the image probe's ceiling is about 50% there, against 12.5% chance. The
paper reports 40.4% (images, 8 classes) and 63.56% (music, 3 classes) on IMAC.
"""

import ml_collections

from acp_jax import UserError
from configs import evaluate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluate job with the probes; no variants."""
  if arg is not None:
    raise UserError(f"configs/probe.py takes no argument, got {arg!r}")
  return evaluate.get_config("probes")
