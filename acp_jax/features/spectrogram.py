"""Log-spectrograms of waveforms on device: the baselines' music input (paper section 4).

The paper computes them with an STFT of 100 ms windows and a 25 ms hop and says no
more. Our choices, all in `SpectrogramConfig`:
  * Hann window of exactly the window length (2205 samples at 22050 Hz), FFT of the
    same size (no zero padding: XLA's FFT takes any size), frames centred on
    `t * hop` with the signal zero-padded by half a window at both ends, i.e.
    `librosa.stft(y, n_fft=2205, win_length=2205, hop_length=551, center=True,
    pad_mode='constant')`; a segment of T samples gives `1 + (T - 1) // hop` frames.
  * Magnitude (not power), then `num_mel_bins` Slaney mel bands over 0 .. sr/2
    (`librosa.filters.mel`) or, with 0, the linear 1 + n_fft // 2 bins.
  * Natural log of the magnitude plus `log_floor`, so silence stays finite.
A linear spectrogram of a 60 s segment is 2401 x 1103 values (~170 GB for the real
corpus's 16k segments in float32); 128 mel bands keep it at ~20 GB.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

# Imports the librosa modules that compile numba gufuncs, under a machine-wide lock.
from acp_jax.features import numba_cache  # pylint: disable=unused-import


@dataclasses.dataclass(frozen=True)
class SpectrogramConfig:
  """STFT framing and frequency scale of the log-spectrogram."""
  sample_rate: int = 22050      # Hz, the waveforms' rate (the imac builder's)
  window_seconds: float = 0.1   # STFT window (paper)
  hop_seconds: float = 0.025    # STFT hop (paper)
  num_mel_bins: int = 128       # mel bands; 0 keeps the linear-frequency bins
  log_floor: float = 1e-5       # added to the magnitude before the log

  @property
  def n_fft(self) -> int:
    return round(self.window_seconds * self.sample_rate)

  @property
  def hop_length(self) -> int:
    return round(self.hop_seconds * self.sample_rate)

  @property
  def num_bins(self) -> int:
    return self.num_mel_bins or self.n_fft // 2 + 1

  def num_frames(self, num_samples: int) -> int:
    return 1 + (num_samples - 1) // self.hop_length


@functools.cache
def _window_and_mel(cfg: SpectrogramConfig) -> tuple[np.ndarray, np.ndarray | None]:
  """The periodic Hann window (as librosa's) and the bins -> mel bands matrix, or None."""
  window_W = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
  mel_MxF = None
  if cfg.num_mel_bins:
    mel_MxF = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.num_mel_bins)
  return window_W.astype(np.float32), mel_MxF


@functools.partial(jax.jit, static_argnames=("cfg",))
def log_spectrogram(waveform_BxT: jax.Array, cfg: SpectrogramConfig) -> jax.Array:
  """B x frames x bins float32 log-spectrograms of float waveforms (full scale 1)."""
  window_W, mel_MxF = _window_and_mel(cfg)
  half = cfg.n_fft // 2
  padded_BxP = jnp.pad(waveform_BxT.astype(jnp.float32), ((0, 0), (half, half)))
  starts_R = cfg.hop_length * np.arange(cfg.num_frames(waveform_BxT.shape[1]))
  frames_BxRxW = padded_BxP[:, starts_R[:, None] + np.arange(cfg.n_fft)]
  magnitude_BxRxF = jnp.abs(jnp.fft.rfft(frames_BxRxW * window_W, axis=-1))
  if mel_MxF is not None:
    magnitude_BxRxF = jnp.einsum("brf,mf->brm", magnitude_BxRxF, mel_MxF,
                                 precision=jax.lax.Precision.HIGHEST)
  return jnp.log(magnitude_BxRxF + cfg.log_floor)
