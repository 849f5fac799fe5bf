r"""ACP-Net on IMAC (paper sections 3-4), and a laptop demo on the synthetic corpus.

Paper setting, on the real IMAC features (assemble the manual dir described in
tfds_imac/imac/README.md first):

  tfds build --imports tfds_imac imac/features --manual_dir=/path/to/imac_manual_dir
  python launch.py --config=configs/acp.py --workdir=/tmp/acp_imac

  At most 50 epochs of ~60k training images at batch 256 (~11.7k steps), stopped
  early on validation accuracy. Not measured on an accelerator; on generated features
  at IMAC's size, `python -m bench.paper_scale` measures every phase of this config.
  The paper reports 61.67% test accuracy.

Demo on generated data (no download; the first run builds `imac/synthetic`, ~1 min):

  python launch.py --config=configs/acp.py:synthetic --workdir=/tmp/acp_synthetic

  The training (3 seeds at once, at most 900 steps, stopped early on validation
  accuracy), then the evaluators: test pairs, retrieval, the Table 5 probes of
  configs/probe.py (`config.evals.probes`, in this config only) and the figures.
  Measured from a clean clone with a fresh data dir, build included, on 2 cores of an
  AMD EPYC (Zen 4, family 25 model 17) running nothing else: 2 min 07 s, of which the
  build 43 s, compile 6 s, training 56 s (690 steps), probes 6 s, figures 3 s,
  retrieval 1 s, pairs 1 s (`phases_s` in results.json; an earlier release took 85 s
  on an idle Zen 5, 239 s on a Zen 1).
  test_accuracy 0.802, sample std 0.008 over the 3 seeds (95% interval 0.782-0.823)
  on the 140 fixed test pairs, against oracle_accuracy 0.814 (the ceiling the
  corpus's label noise sets): 0.99 x; both in /tmp/acp_synthetic/results.json, with
  report.md, report.html (which plays the generated music) and figures/ beside it.

Any field can be overridden, e.g. `--config.batch_size=512 --config.num_seeds=3`.
"""

import ml_collections

from acp_jax import UserError


def report_config() -> ml_collections.ConfigDict:
  """How a run's report is laid out; shared by the training and evaluate configs."""
  report = ml_collections.ConfigDict()
  # Other runs' workdirs, comma-separated: their results.json rows join Table 4, keyed by
  # their `model` (acp, l3net, spectrogram_acp) and objective; this run's own row wins.
  report.compare = ""
  return report


def probe_settings() -> ml_collections.ConfigDict:
  """The MLP probes of Table 5 (acp_jax/evaluators/probes.py, train_probe), the same for
  images and music."""
  settings = ml_collections.ConfigDict()
  settings.hidden = (512, 32)           # hidden widths (paper, music; images unstated)
  settings.learning_rate = 1e-3         # Adam
  settings.epochs = 200                 # at most
  settings.batch_size = 64              # examples per step (capped at the training set)
  settings.dropout = 0.5                # after each hidden layer
  settings.weight_decay = 1e-4          # decoupled (AdamW)
  settings.patience = 20                # epochs without a better validation accuracy
  settings.seed = 0                     # initialisation, shuffling, dropout
  return settings


def media_config() -> ml_collections.ConfigDict:
  """Where the report's listening gallery finds the media and how it keeps them
  (acp_jax/gallery.py); the figures evaluator's and the retrieve job's."""
  media = ml_collections.ConfigDict()
  # The IMAC manual dir (images/<emotion>/<name>.<ext>, music/<song_id>.<ext>); None: a
  # media config's records or a synthetic config's generated corpus, else ids only.
  media.manual_dir = ml_collections.config_dict.placeholder(str)
  media.clip_seconds = 10.0             # each segment's clip: its first seconds at most
  media.clip_kbps = 48                  # Opus bit rate of a clip (mono): ~6 kB a second
  return media


def evals_config(probes: bool = False) -> ml_collections.ConfigDict:
  """The evaluators run on the best params, in order (acp_jax/evaluate.py): {name: options}.

  An entry's `type` (default: its name) is a module of acp_jax/evaluators; drop an entry
  to skip it (`pairs` gives results.json's test accuracy, so keep that one).
  """
  evals = ml_collections.ConfigDict()
  evals.pairs = ml_collections.ConfigDict()  # accuracy and AUC on the fixed test pairs
  evals.pairs.bootstrap_resamples = 2000   # one seed: test-pair bootstrap for the 95% interval
  evals.retrieval = ml_collections.ConfigDict()  # music <-> image retrieval, both ways
  evals.retrieval.ks = (1, 5, 10)          # precision cut-offs
  evals.retrieval.score_block = 8192       # (music, image) pairs scored per call; ~12 kB each
  # Queries of each direction at most (a seeded sample; None: all). A query runs the fusion
  # head once per key: all of IMAC's 3k x 17k test pairs are the FLOPs of ~11 training
  # epochs, 500 queries each way ~2.
  evals.retrieval.max_queries = 500
  evals.retrieval.seed = 0                 # which queries
  if probes:
    evals.probes = probe_settings()        # Table 5: MLP emotion probes on the embeddings
  evals.figures = ml_collections.ConfigDict()  # curves, confusion, t-SNE maps, gallery
  evals.figures.media = media_config()   # the listening gallery's media (report.html)
  evals.figures.gallery_rows_per_class = 2  # queries of each class, each way, in the gallery
  evals.figures.gallery_top_k = 5        # top-ranked items of the other modality per query
  evals.figures.map_points = 2000        # t-SNE embedding maps: at most this many points each
  evals.figures.score_block = evals.retrieval.score_block  # pairs scored per call (gallery)
  return evals


VARIANTS = ("synthetic", "class_loss")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper setting; `arg` is comma-separated words of VARIANTS: `synthetic` for the
  demo on `imac/synthetic`, `class_loss` for the towers' class loss (not the paper's)."""
  words = [w for w in (arg or "").split(",") if w]
  if not set(words) <= set(VARIANTS):
    raise UserError(f"unknown config argument {arg!r}; use configs/acp.py, or with any of "
                    f"{', '.join(VARIANTS)} after a colon, e.g. configs/acp.py:synthetic")
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = "imac/features"      # TFDS name: imac/features (real) or imac/synthetic
  # TFDS data dir; None = TFDS default (~/tensorflow_datasets). A placeholder, so that
  # --config.data_dir=DIR can set it.
  config.data_dir = ml_collections.config_dict.placeholder(str)

  # Model (paper section 3; widths the paper leaves out are ours).
  config.model = "acp"                  # key of models.MODELS
  config.objective = "correspondence"   # ACP-Net's pair cross-entropy (acp_jax/objectives.py)
  config.image_widths = (1024, 1024)    # image tower: 2 FC layers, ending in the 1024-d embedding
  config.music_widths = (256, 512, 1024, 1024)  # music tower: 4 FC layers, ending in 1024-d
  config.fusion_widths = (1024, 256, 64)  # hidden fusion FC layers; a 4th FC gives the 2 logits
  config.dropout_rate = 0.4             # drop probability (paper; it does not say where)
  # Dropout after the tower layers too. Off: on our fake and synthetic data it stalls
  # learning (validation accuracy stays at chance for 1800 steps; fusion-only learns in ~300).
  config.dropout_in_towers = False
  # Not in the paper (0 there): a linear class head on each tower, and the loss adds this
  # weight times their class cross-entropies on the pair's items. With weak class cues the
  # paper's model answers one constant (loss ln 2) where a linear model finds the classes;
  # this term lets it learn there (acp_jax/objectives.py, `configs/acp.py:class_loss`).
  config.class_loss_weight = 0.0

  # Optimisation (paper section 4: Adam, cross-entropy, early stopping).
  config.learning_rate = 1e-4           # Adam (paper)
  config.weight_decay = 0.0             # decoupled (AdamW); 0 is the paper's plain Adam
  config.batch_size = 256               # pairs per step, over all devices (not in the paper)
  config.num_epochs = 50                # at most; an epoch = as many pairs as training images
  config.patience = 5                   # evaluations without a better validation accuracy
  config.seed = 0                       # seed s of num_seeds uses seed + s
  config.num_seeds = 1                  # independent models trained at once (vmapped)

  # Loop.
  config.steps_per_dispatch = 16        # steps per compiled call (lax.scan); cadences round to it
  # Unroll those steps instead of looping: longer compiles, but XLA:CPU runs conv kernel
  # gradients ~10x slower inside a loop (the conv baselines set it).
  config.unroll_steps = False
  config.log_every_steps = 64           # train metrics to TensorBoard and metrics.jsonl
  config.eval_every_epochs = 1.0        # validation accuracy, early stopping
  config.checkpoint_every_epochs = 1.0  # latest (and best, if it changed) checkpoint

  # Evaluation of the best params at the end (acp_jax/evaluate.py), and its report
  # (report.md, report.html, results.json, figures/, gallery/).
  config.evals = evals_config()
  config.report = report_config()

  if "class_loss" in words:
    config.class_loss_weight = 1.0
  if "synthetic" in words:
    config.dataset = "imac/synthetic"
    # ~340 training images: an epoch is 6 steps, so epochs are many and evaluations sparse.
    config.batch_size = 64
    config.learning_rate = 1e-3         # 1e-4 needs ~10x the steps to leave chance level
    config.num_epochs = 150             # ~900 steps
    config.eval_every_epochs = 5.0      # every 30 steps: patience 10 = 300 steps
    config.patience = 10
    config.num_seeds = 3                # report mean and std
    config.steps_per_dispatch = 10
    config.log_every_steps = 30
    config.checkpoint_every_epochs = 25.0
    config.evals = evals_config(probes=True)  # the demo's report fills Table 5 too
  return config
