r"""L3-Net (Arandjelovic & Zisserman 2017) on IMAC media: the paper's first Table 4 baseline.

Two conv subnetworks trained from scratch, one on raw 224x224 images and one on
log-spectrograms of the music segments (STFT window 100 ms, hop 25 ms: paper
section 4): 4 blocks of 2 conv3x3 + BatchNorm + ReLU each, max-pooled to 512-d,
then concatenation, FC 128 and the 2-way output. Same loop, pairs, checkpoints,
metrics and report as ACP-Net (configs/acp.py); only the model and its inputs differ.

Paper setting, on the real IMAC media (build `imac/media` as in tfds_imac/imac/README.md):

  python launch.py --config=configs/l3net.py --workdir=/tmp/l3net_imac

  Not run here (no real data). The media stream from the item-level ArrayRecord
  splits (acp_jax/feeds.py): `config.input.workers` processes read each step's
  pairs, which reach the devices `config.input.device_prefetch` dispatches ahead;
  log-spectrograms and 224x224 images are made on device per batch. Host memory is
  set by the batch, the workers and the prefetch depths, not by the corpus: a
  dispatch (4 steps of 32 pairs) is ~360 MB of pixels and 60 s waveforms, held at
  most workers x prefetch + prefetch + device_prefetch = 11 times (~4 GB). Device
  memory: the model's activations at batch 32 (estimated ~30 GB with the paper's
  towers on 2401 x 128 spectrograms) plus `device_prefetch` dispatches of media.
  The paper reports 57.17% test accuracy.

Demo on generated data (no download; the first run builds `imac/synthetic_media`, ~2 min):

  python launch.py --config=configs/l3net.py:synthetic --workdir=/tmp/l3net_synthetic

  Scaled down to run on 2 CPU cores, which would take over a minute per step of the
  paper's towers (estimated from their FLOPs): images downsampled on device to
  32x32, 32 mel bands instead of 128 (the STFT stays the paper's), conv blocks of
  8/16/32/64 channels instead of 64/128/256/512, one seed, one input worker. ~0.3 s
  per step, early stopping after ~200 steps.
  Measured streamed on 2 idle cores, from a fresh clone and TFDS data dir (imac
  2.1.0): 2 min 49 s including the build, early-stopped at step 180; test_accuracy
  0.814 (AUC 0.818) against an oracle_accuracy of 0.814, both in results.json (one
  seed; +-3 points of noise). On this CPU demo a streamed step takes ~1.6x the time
  of an in-memory one (bench/media.py: 0.61-0.63x the steps/s on 2 idle cores). Per
  step of 64 pairs: ~400 ms of CPU for the towers and the update; ~150 ms for the
  log-spectrograms, which the in-memory path makes once per item (XLA:CPU's FFT of
  15k frames of 2205 samples, ~90 ms on one thread, and the framing gather, ~50 ms);
  ~25 ms for the image resize; and ~50 ms of the input worker's CPU for reading the
  records. Those are near what XLA:CPU and the record reader do at best, so on 2 CPU
  cores the stream stays well short of the in-memory speed; with the cores shared
  (load average 3.5-5.5) it measured 0.4-0.7x.

Any field can be overridden, e.g. `--config.image_size=64`.
"""

import ml_collections

from acp_jax import UserError
from configs import acp


def media_config(arg: str | None, name: str) -> ml_collections.ConfigDict:
  """configs/acp.py's config (loop, optimiser, report) on the media of the same data.

  Shared by the baselines that read media: the spectrogram front end, BatchNorm, and
  for `arg='synthetic'` a CPU-sized run on `imac/synthetic_media`.
  """
  if arg not in (None, "synthetic"):
    raise UserError(f"unknown config argument {arg!r}; use configs/{name}.py or "
                     f"configs/{name}.py:synthetic")
  config = acp.get_config(arg)
  config.dataset = "imac/synthetic_media" if arg else "imac/media"  # pixels, waveforms, features

  # Music input: log-spectrograms, made on device per batch (acp_jax/features/spectrogram.py).
  config.spectrogram = ml_collections.ConfigDict()
  config.spectrogram.sample_rate = 22050   # Hz, the waveforms' rate (the imac builder's)
  config.spectrogram.window_seconds = 0.1  # STFT window (paper)
  config.spectrogram.hop_seconds = 0.025   # STFT hop (paper)
  # Mel bands (0: the 1103 linear bins of a 100 ms window).
  config.spectrogram.num_mel_bins = 128
  config.spectrogram.log_floor = 1e-5      # added to the magnitude before the log

  # Input pipeline (acp_jax/feeds.py): media read per step by index; memory is set by
  # these and the batch, not by the corpus.
  config.input = ml_collections.ConfigDict()
  config.input.stream = True            # False: all media prepared once and held on device
  config.input.workers = 8              # processes reading and decoding records (0: in-process)
  config.input.read_threads = 1         # threads per worker reading records (<= prefetch)
  config.input.prefetch = 1             # dispatches buffered per worker and on the host
  config.input.device_prefetch = 2      # dispatches placed on the devices ahead of the step
  config.input.standardizer_items = 512  # training items sampled for the input statistics

  # Conv towers (L3-Net's subnetworks): one block of 2 conv3x3 + BN + ReLU per entry.
  config.music_channels = (64, 128, 256, 512)
  config.batch_norm_momentum = 0.9      # decay of the BatchNorm running statistics

  config.batch_size = 32                # a 60 s spectrogram is 2401 x 128: activations bound it
  config.steps_per_dispatch = 4         # a dispatch's media is in memory at once (~360 MB)
  if arg == "synthetic":
    # 2 CPU cores would take over a minute per step of the paper's towers: 32 mel bands
    # instead of 128 (241 x 32 per 6 s segment) and 8x narrower blocks, ~0.3 s per step.
    config.unroll_steps = True            # XLA:CPU runs conv kernel gradients ~10x slower in loops
    config.steps_per_dispatch = 10        # as configs/acp.py:synthetic (6 s segments: ~20 MB)
    config.batch_size = 64                # as configs/acp.py:synthetic
    config.spectrogram.num_mel_bins = 32
    config.music_channels = (8, 16, 32, 64)
    config.num_seeds = 1                  # a pair costs ~10x an ACP-Net pair here (conv towers)
    config.input.workers = 1              # decoding is light here; 2 cores run the steps
    config.num_epochs = 60                # ~360 steps
    config.patience = 4                   # evaluations (every 30 steps)
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper setting; `arg='synthetic'` for the CPU demo on `imac/synthetic_media`."""
  config = media_config(arg, "l3net")
  config.model = "l3net"                # key of models.MODELS
  config.image_size = 224               # images resized on device to this side (paper: 224)
  config.image_channels = (64, 128, 256, 512)
  # No FC layers in the towers: the max-pooled conv outputs are the 512-d embeddings.
  config.image_widths = ()
  config.music_widths = ()
  config.fusion_widths = (128,)         # concatenation -> FC 128 -> FC 2 (L3-Net)
  config.dropout_rate = 0.0             # L3-Net has no dropout; BatchNorm regularises
  if arg == "synthetic":
    config.image_size = 32              # downsampled on device from the stored 224x224
    config.image_channels = config.music_channels
  return config
