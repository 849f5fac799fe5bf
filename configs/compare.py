r"""Frozen encoders against the paper's features, side by side on the same fixed pairs.

  python launch.py --config=configs/compare.py --workdir=/tmp/encoders_imac
  python launch.py --config=configs/compare.py:synthetic --workdir=/tmp/encoders_synthetic

The compare job (acp_jax/compare.py) trains, or resumes, each run of `config.runs` in
<workdir>/<run>/, a whole run with its own report, then writes <workdir>/report.md:
Table 4 and retrieval both ways of every run, mean ± std over each run's seeds. The
runs: every features config times every objective, named <features>_<objective>.
Features: `paper` (imac/features: Inception-V3 and the 193-d descriptor), `clip_clap`
(CLIP ViT-B/32 + CLAP) and `siglip_clap` (SigLIP B/16 + CLAP); objectives:
`correspondence` (ACP-Net's), `supcon`, `sigmoid`, each with configs/contrastive.py's
settings. The frozen encoders' builds need their weights (README, "Frozen encoders").
All features configs of one corpus hold the same fixed pairs; the report checks it.

`synthetic` runs the grid on the generated corpus (imac/synthetic and
imac/synthetic_{clip,siglip}_clap) with the demo's settings. That shows the pipeline
end to end, but the frozen encoders see generated pictures and tones there, with
whatever weights the weights directory holds (random ones in the tests): the numbers
mean nothing about the encoders, and the report says so.

More words pick part of the grid, e.g. `configs/compare.py:synthetic,paper,clip_clap,supcon`;
a run's field is set with `--config.runs.<run>.<field>=...`.
"""

import ml_collections

from acp_jax import UserError
from configs import contrastive

# Features config -> its dataset's name after `imac/` (real) or `imac/synthetic_`.
FEATURES = {"paper": None, "clip_clap": "clip_clap", "siglip_clap": "siglip_clap"}


def run_config(features: str, objective: str, synthetic: bool) -> ml_collections.ConfigDict:
  """One run of the grid: configs/contrastive.py's config of `objective` on `features`."""
  config = contrastive.get_config(f"{objective},synthetic" if synthetic else objective)
  if FEATURES[features] is not None:
    config.dataset = f"imac/{'synthetic_' if synthetic else ''}{FEATURES[features]}"
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The compare job; `arg`: comma-separated `synthetic`, FEATURES and objectives."""
  words = [w for w in (arg or "").split(",") if w]
  unknown = [w for w in words
             if w != "synthetic" and w not in FEATURES and w not in contrastive.OBJECTIVES]
  if unknown:
    raise UserError(f"unknown config argument(s) {unknown}; use any of synthetic, "
                    f"{', '.join(FEATURES)}, {', '.join(contrastive.OBJECTIVES)}, e.g. "
                    "configs/compare.py:synthetic,paper,clip_clap,supcon")
  features = [w for w in words if w in FEATURES] or list(FEATURES)
  objectives = [w for w in words if w in contrastive.OBJECTIVES] or list(contrastive.OBJECTIVES)
  config = ml_collections.ConfigDict()
  config.job = "compare"                # launch.py runs compare.run
  # In grid order (the report's first run is the first of its Table 4 rows' runs).
  config.runs = ml_collections.ConfigDict(
      {f"{f}_{o}": run_config(f, o, "synthetic" in words) for f in features for o in objectives},
      sort_keys=False)
  return config
