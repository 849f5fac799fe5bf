r"""Spectrogram-ACP: ACP-Net with a spectrogram music tower, the paper's second Table 4 baseline.

ACP-Net (configs/acp.py) with its 193-d descriptor tower replaced by a conv tower on
log-spectrograms of the music segments (STFT window 100 ms, hop 25 ms, paper section
4): L3-Net's audio subnetwork (4 blocks of 2 conv3x3 + BatchNorm + ReLU, max-pooled
to 512-d), then FC to the 1024-d common space. The image tower, fusion head, dropout
and optimiser are ACP-Net's, on the same Inception-V3 features. The media configs
carry those features as well as the waveforms.

Paper setting, on the real IMAC media (build `imac/media` as in tfds_imac/imac/README.md):

  python launch.py --config=configs/spectrogram_acp.py --workdir=/tmp/spectrogram_acp_imac

  Not run here (no real data). The segments' waveforms stream as for
  configs/l3net.py (`config.input`), with the images' Inception-V3 features read
  from the same records; log-spectrograms are made on device per batch. The paper
  reports 55.84% test accuracy.

Demo on generated data (no download; the first run builds `imac/synthetic_media`, ~2 min):

  python launch.py --config=configs/spectrogram_acp.py:synthetic \
      --workdir=/tmp/spectrogram_acp_synthetic

  Scaled down for 2 CPU cores as configs/l3net.py:synthetic: 32 mel bands instead of
  128, conv blocks of 8/16/32/64 channels instead of 64/128/256/512, one seed.
  Measured (before streaming): 2.5 minutes after the build, 360 steps; test_accuracy
  0.896 (AUC 0.904) against an oracle_accuracy of 0.896, both in results.json (one
  seed; 125 test pairs, so +-3 points of noise).

Any field can be overridden, e.g. `--config.spectrogram.num_mel_bins=64`.
"""

import ml_collections

from configs import l3net


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper setting; `arg='synthetic'` for the CPU demo on `imac/synthetic_media`."""
  config = l3net.media_config(arg, "spectrogram_acp")
  config.model = "spectrogram_acp"      # key of models.MODELS
  config.music_widths = (1024,)         # after the conv blocks: FC to the 1024-d common space
  return config
