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

Demos on generated data (no download; the first run builds the dataset, ~3-6 min
on 2 loaded CPU cores):

  python launch.py --config=configs/contrastive.py:synthetic,supcon --workdir=/tmp/supcon_syn
  python launch.py --config=configs/contrastive.py:synthetic,sigmoid --workdir=/tmp/sigmoid_syn
  python launch.py --config=configs/contrastive.py:synthetic_hard,supcon \
      --workdir=/tmp/supcon_hard --config.report.compare=/tmp/acp_hard,/tmp/sigmoid_hard

  3 seeds each, about 1-2 minutes of training on 2 CPU cores; measured figures in
  acp_jax/objectives.py's table below (test accuracy, mean +- std over 3 seeds).
  On `imac/synthetic` (oracle 0.896; ACP-Net 0.864 +- 0.007): see MEASURED.

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
