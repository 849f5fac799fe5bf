"""The compare job: one report of runs on several features configs of the same pairs.

`run(config, workdir)` (configs/compare.py) trains or resumes each run of
`config.runs` in a directory of its own, then lays out Table 4 and retrieval of all of
them in `<workdir>/report.md` with the report code of a single run, whose
`report.table4_rows` refuses runs on other fixed pairs.
"""

from typing import Any

from etils import epath
import ml_collections

from acp_jax import UserError
from acp_jax import report
from acp_jax import train


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains each run in `<workdir>/<run>`, then writes the joint report and results.json.

  Returns the first run's results with every run's Table 4 row and retrieval under
  `models`.
  """
  if not config.runs:
    raise UserError("config.runs is empty: name at least one run (configs/compare.py)")
  out = epath.Path(workdir)
  results = {}
  for name, run_config in config.runs.items():
    print(f"\n== {name}: {run_config.dataset}, objective {run_config.objective}", flush=True)
    results[name] = train.train_and_evaluate(run_config, str(out / name))
  first, *others = config.runs
  joint = {**results[first], "compared_runs": list(config.runs)}
  joint.pop("gallery", None)  # its clips and thumbnails are in the first run's folder
  joint["models"] = report.table4_rows(joint, ",".join(str(out / name) for name in others))
  report.write_report(joint, out, {})
  print(f"\nreport: {out / 'report.md'}")
  return joint
