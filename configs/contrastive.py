r"""ACP-Net's towers trained with a contrastive objective (acp_jax/objectives.py).

`get_config(arg)`: arg is comma-separated words, an objective and optionally a dataset:

  objective  supcon (default; Emo-CLIM's four-term supervised contrastive loss),
             sigmoid (SigLIP's pairwise sigmoid loss), correspondence (ACP-Net's
             cross-entropy, as configs/acp.py, for side-by-side runs)
  dataset    synthetic (`imac/synthetic`), synthetic_hard (`imac/synthetic_hard`:
             weaker cues, more label noise, more items); none: the real features

Paper setting (Emo-CLIM's hyper-parameters on the IMAC features: 128-d projections
after a 256-unit hidden layer with dropout 0.2, temperature 0.07, weights 0.25, AdamW 1e-4 with
PyTorch's default decay 0.01, batch 64, at most 30 epochs):

  python launch.py --config=configs/contrastive.py:supcon --workdir=/tmp/supcon_imac

  Not run here (no real data). Emo-CLIM reports image->music P@1 0.70 and MRR 0.79
  (macro over classes) with its own backbones.

Demos on generated data (no download; the first run builds the dataset, on 2 idle CPU
cores about a minute for `imac/synthetic` and 83 s for `imac/synthetic_hard`, which has
1.7x the images and 1.25x the songs):

  python launch.py --config=configs/contrastive.py:synthetic,supcon --workdir=/tmp/supcon_syn
  python launch.py --config=configs/contrastive.py:synthetic,sigmoid --workdir=/tmp/sigmoid_syn
  python launch.py --config=configs/contrastive.py:synthetic,correspondence --workdir=/tmp/acp_syn
  # Re-running a finished run only rewrites its report; this one with the others beside it:
  python launch.py --config=configs/contrastive.py:synthetic,supcon --workdir=/tmp/supcon_syn \
      --config.report.compare=/tmp/acp_syn,/tmp/sigmoid_syn

  `synthetic_hard` in place of `synthetic` for the harder corpus. 3 seeds each, early
  stopped on validation accuracy. Measured on `imac/synthetic` 2.0.0 (test accuracy on
  its 140 fixed test pairs, mean +- sample std over the 3 seeds; oracle 0.814;
  image->music retrieval over the 101 test images as queries, %):

    objective       test accuracy   x oracle  AUC            P@1          MRR
    correspondence  0.795 +- 0.039  0.98      0.814 +- 0.034 78.2 +- 14.9 85.1 +- 7.3
    supcon          0.767 +- 0.021  0.94      0.800 +- 0.017 86.4 +- 1.7  88.7 +- 1.6
    sigmoid         0.745 +- 0.039  0.92      0.783 +- 0.022 75.4 +- 9.9  82.8 +- 4.7

  With the dataset built: supcon 73 s (330 steps), sigmoid 131 s (690 steps) on 2 CPU
  cores that were also running the test suite; correspondence is configs/acp.py's demo
  (2 min on idle cores, build and probes included).

  On `imac/synthetic_hard` 2.0.0 (198 fixed test pairs, oracle 0.727; image->music over
  153 queries; at most 400 steps, evaluated every 20; mean +- sample std over 3 seeds):

    objective       test accuracy   x oracle  AUC            P@1          MRR
    correspondence  0.471 +- 0.019  0.65      0.480 +- 0.042 32.8 +- 3.0  53.2 +- 1.2
    supcon          0.581 +- 0.018  0.80      0.621 +- 0.019 55.1 +- 7.4  67.1 +- 3.3
    sigmoid         0.556 +- 0.022  0.76      0.608 +- 0.014 43.3 +- 3.7  62.4 +- 3.3

    correspondence, at most 900 steps with patience 30 (`--config.num_epochs=100
    --config.patience=30`; seeds 0.500, 0.652, 0.485, best steps 380-660):
                    0.545 +- 0.092  0.75      0.561 +- 0.086 44.2 +- 6.2  58.7 +- 8.5

  With the shared budget ACP-Net's cross-entropy does not leave chance, where both
  contrastive objectives learn within a few hundred steps (supcon ahead of sigmoid in
  retrieval); given 900 steps one of three ACP-Net seeds reaches them. 85-110 s each on
  idle cores with the dataset built (the 900-step run: 245 s).

Any field can be overridden, e.g. `--config.temperature=0.1 --config.batch_size=128`.
"""

import math

import ml_collections

from configs import acp

OBJECTIVES = ("supcon", "sigmoid", "correspondence")
DATASETS = {"synthetic": "imac/synthetic", "synthetic_hard": "imac/synthetic_hard"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """See the module docstring for `arg`."""
  words = [w for w in (arg or "").split(",") if w]
  unknown = [w for w in words if w not in OBJECTIVES and w not in DATASETS]
  objective = [w for w in words if w in OBJECTIVES] or ["supcon"]
  dataset = [w for w in words if w in DATASETS]
  if unknown or len(objective) > 1 or len(dataset) > 1:
    raise ValueError(f"bad config argument {arg!r}: give at most one objective of "
                     f"{OBJECTIVES} and one dataset of {tuple(DATASETS)}, comma-separated, "
                     "e.g. configs/contrastive.py:synthetic,sigmoid")
  config = acp.get_config("synthetic" if dataset else None)
  if dataset:
    config.dataset = DATASETS[dataset[0]]
  if dataset == ["synthetic_hard"]:
    # ~560 training images: 9 steps an epoch; at most ~400 steps, evaluated every ~22.
    config.num_epochs = 45
    config.eval_every_epochs = 2.5
    config.patience = 8
    config.checkpoint_every_epochs = 10.0
  config.objective = objective[0]       # acp_jax/objectives.py
  if config.objective == "correspondence":
    return config

  # Projection heads (Emo-CLIM: 256 hidden, 128-d unit-norm output).
  config.projection_widths = (256, 128)
  config.projection_dropout_rate = 0.2  # after the hidden layer (Emo-CLIM)
  config.temperature = 0.07             # supcon
  config.supcon_weights = (0.25, 0.25, 0.25, 0.25)  # image-image, music-music, i->m, m->i
  # sigmoid: t' and b, logits exp(t') cos + b; SigLIP's initialisation.
  config.logit_scale_init = ml_collections.config_dict.placeholder(float)
  if config.objective == "sigmoid":
    config.logit_scale_init = math.log(10.0)
  config.logit_bias_init = -10.0

  # Optimisation (Emo-CLIM: AdamW 1e-4, batch 64; PyTorch's AdamW decay).
  config.weight_decay = 0.01
  if not dataset:
    config.learning_rate = 1e-4
    config.batch_size = 64              # items per modality per step
    config.num_epochs = 30
  return config
