r"""Evaluate a trained run's best checkpoint again: the evaluate job (acp_jax/evaluate.py).

  python launch.py --config=configs/evaluate.py --config.checkpoint_dir=/tmp/acp_synthetic \
      --workdir=/tmp/acp_synthetic_eval

Restores every seed of the best checkpoint of the run in checkpoint_dir, reads its
dataset as the run did, and runs `config.evals` on it: by default what a training run
ends with (Table 4 accuracy and AUC, retrieval both ways, figures), which it
reproduces; `configs/evaluate.py:probes` (or configs/probe.py) adds the Table 5
probes. Add, drop or tune an evaluator with `--config.evals...` overrides, e.g.
`--config.evals.figures.map_points=500`. Writes report.md, report.html, results.json,
figures/ and gallery/ to the workdir. Seconds on the synthetic demo run, on 2 CPU cores; the probes ~30 s more.
"""

import ml_collections

from acp_jax import UserError
from configs import acp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluate job; `arg='probes'` adds the Table 5 emotion probes."""
  if arg not in (None, "probes"):
    raise UserError(f"unknown config argument {arg!r}; use configs/evaluate.py or "
                    "configs/evaluate.py:probes")
  config = ml_collections.ConfigDict()
  config.job = "evaluate"               # launch.py runs evaluate.run
  placeholder = ml_collections.config_dict.placeholder
  config.checkpoint_dir = placeholder(str)  # the trained run's workdir (required)
  config.dataset = placeholder(str)     # None: the run's; else must match it
  config.data_dir = placeholder(str)    # TFDS data dir; None: the run's
  config.seed_index = placeholder(int)  # the seed analysed (probes, figures); None: best
  config.evals = acp.evals_config(probes=arg == "probes")
  config.report = acp.report_config()
  return config
