"""Log-spectrograms on device against librosa's STFT with the same framing."""

import librosa
import numpy as np
import pytest

from acp_jax.features import spectrogram


def _waveforms(num: int, seconds: float, seed: int = 0) -> np.ndarray:
  """int16 chirps plus noise, with a silent start (the log floor) and clipping peaks."""
  rng = np.random.default_rng(seed)
  time_T = np.arange(round(seconds * 22050)) / 22050
  waves = [np.sin(2 * np.pi * (200 + 400 * k + 3000 * time_T) * time_T)
           + 0.1 * rng.normal(size=time_T.size) for k in range(num)]
  waves_NxT = np.clip(np.stack(waves), -1, 1)
  waves_NxT[:, :3000] = 0
  return np.round(waves_NxT * 32767).astype(np.int16)


def _reference(wave_T: np.ndarray, cfg: spectrogram.SpectrogramConfig) -> np.ndarray:
  y_T = wave_T.astype(np.float32) / 32768
  magnitude_FxR = np.abs(librosa.stft(y_T, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                      win_length=cfg.n_fft, window="hann", center=True,
                                      pad_mode="constant"))
  if cfg.num_mel_bins:
    magnitude_FxR = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                        n_mels=cfg.num_mel_bins) @ magnitude_FxR
  return np.log(magnitude_FxR + cfg.log_floor).T


@pytest.mark.parametrize("num_mel_bins, atol", [(128, 1e-4), (0, 1e-3)])
def test_matches_librosa(num_mel_bins, atol):
  cfg = spectrogram.SpectrogramConfig(num_mel_bins=num_mel_bins)
  assert (cfg.n_fft, cfg.hop_length) == (2205, 551)  # 100 ms and 25 ms at 22050 Hz (paper)
  waves_NxT = _waveforms(3, 2.0)
  ours_NxRxF = np.asarray(spectrogram.log_spectrogram(waves_NxT / 32768, cfg))
  assert ours_NxRxF.shape == (3, cfg.num_frames(waves_NxT.shape[1]), cfg.num_bins)
  assert ours_NxRxF.shape[1:] == (81, num_mel_bins or 1103)
  assert np.isfinite(ours_NxRxF).all()
  for wave_T, ours_RxF in zip(waves_NxT, ours_NxRxF):
    np.testing.assert_allclose(ours_RxF, _reference(wave_T, cfg), rtol=0, atol=atol)
  # The silent start sits at the floor.
  assert ours_NxRxF[:, 0].max() == pytest.approx(np.log(cfg.log_floor), abs=1e-3)
