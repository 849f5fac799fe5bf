"""The 193-d music descriptor: segmentation, equality with the librosa recipe, loading."""

import dataclasses
import os
import pathlib
import pickle
import subprocess
import sys

import librosa
import numpy as np
import pytest
import scipy.ndimage
import soundfile as sf

from acp_jax.features import music
from acp_jax.features import numba_cache

SR = 22050
# The synthetic corpus's setting: short enough that the literal recipe runs in a test.
SHORT = music.DescriptorConfig(segment_seconds=6.0, window_seconds=2.0, hop_seconds=1.0)
PAPER = music.DescriptorConfig()
# ||descriptor - reference_descriptor|| / ||reference_descriptor|| allowed per family.
EXACT = 1e-4
# librosa warns when the lowest CQT octave is longer than a 2 s signal, and when a
# silent window has no pitch to estimate a tuning from (both paths do the same then).
SHORT_CQT = pytest.mark.filterwarnings("ignore:n_fft=.*too large:UserWarning",
                                       "ignore:Trying to estimate tuning:UserWarning")


def synthetic_music(seconds: float, seed: int, detune_cents: float = 0.0,
                    sr: int = SR) -> np.ndarray:
  """Mono float32: a chord progression with harmonics, bass, drums, noise, swells."""
  rng = np.random.default_rng(seed)
  t_T = np.arange(round(seconds * sr)) / sr
  beat = 60 / rng.uniform(80, 140)
  bar_T = (t_T // (4 * beat)).astype(int)
  since_bar_T = t_T - bar_T * 4 * beat
  root_B = rng.integers(45, 57) + rng.choice([0, 3, 5, 7, 8, 10], size=bar_T[-1] + 1)
  third_B = rng.choice([3, 4], size=bar_T[-1] + 1)
  chord_env_T = np.minimum(1, since_bar_T / 0.05) * np.exp(-since_bar_T / 3)
  y_T = np.zeros_like(t_T)
  for interval, amp in [(0, 0.3), (third_B, 0.3), (7, 0.3), (12, 0.2), (-12, 0.5)]:
    hz_T = 440 * 2 ** (((root_B + interval)[bar_T] - 69 + detune_cents / 100) / 12)
    for harmonic in range(1, 6):
      y_T += amp / harmonic * chord_env_T * np.sin(2 * np.pi * harmonic * hz_T * since_bar_T)
  beat_T = (t_T // beat).astype(int)
  since_beat_T = t_T - beat_T * beat
  noise_T = rng.standard_normal(len(t_T))
  kick_T = np.sin(2 * np.pi * (50 * since_beat_T + 3 * (1 - np.exp(-since_beat_T / 0.03))))
  y_T += np.where(beat_T % 2 == 0, kick_T * np.exp(-since_beat_T / 0.08),
                  0.4 * noise_T * np.exp(-since_beat_T / 0.05))
  y_T += 0.1 * noise_T * np.exp(-(t_T % (beat / 2)) / 0.01) + 0.01 * noise_T
  y_T *= 1 + 0.3 * np.sin(2 * np.pi * t_T / 17)
  return (0.9 * y_T / np.abs(y_T).max()).astype(np.float32)


def test_groups_tile_the_193_dims_in_paper_order():
  assert list(music.GROUPS) == ["mfcc", "chroma", "contrast", "tonnetz", "mel"]
  slices = list(music.GROUPS.values())
  assert [s.stop - s.start for s in slices] == [40, 12, 7, 6, 128]
  assert [s.start for s in slices] == [0] + [s.stop for s in slices[:-1]]
  assert slices[-1].stop == music.DESCRIPTOR_DIM == 193


def test_segments_do_not_overlap_and_drop_the_tail():
  y_T = np.arange(round(2.5 * SHORT.segment_samples), dtype=np.float32)
  segments_SxN = music.segment(y_T, SHORT)
  assert segments_SxN.shape == (2, 6 * SR)
  np.testing.assert_array_equal(segments_SxN.ravel(), y_T[:2 * 6 * SR])


def test_segment_rejects_audio_shorter_than_one_segment():
  with pytest.raises(music.AudioError, match="lower segment_seconds") as e:
    music.segment(np.zeros(6 * SR - 1, np.float32), SHORT)
  assert e.value.reason == "shorter than one segment"


@pytest.mark.parametrize("cfg, count", [
    (music.DescriptorConfig(), 11),  # paper: 10 s windows, 5 s hop, 60 s segments
    (SHORT, 5),
    (music.DescriptorConfig(segment_seconds=6, window_seconds=2.5, hop_seconds=1.5), 3),
    (music.DescriptorConfig(segment_seconds=6, window_seconds=6, hop_seconds=1), 1),
])
def test_windows_per_segment(cfg, count):
  starts = cfg.window_starts
  assert len(starts) == count
  assert starts[-1] + cfg.window_samples <= cfg.segment_samples
  np.testing.assert_array_equal(np.diff(starts), cfg.hop_samples)


def test_config_rejects_windows_that_do_not_fit():
  with pytest.raises(ValueError, match="at most segment_seconds"):
    music.DescriptorConfig(segment_seconds=5, window_seconds=10)
  with pytest.raises(ValueError, match="smaller n_fft"):
    music.DescriptorConfig(window_seconds=0.05)


@pytest.mark.parametrize("describe", [music.descriptor, music.reference_descriptor])
def test_descriptors_reject_a_wrong_segment_length(describe):
  with pytest.raises(ValueError, match="cut songs with segment"):
    describe(np.zeros(SHORT.segment_samples + 1, np.float32), SHORT)


@SHORT_CQT
def test_descriptor_averages_its_windows():
  one_window = music.DescriptorConfig(segment_seconds=2.0, window_seconds=2.0)
  y_N = synthetic_music(6.0, seed=7)
  mel = music.GROUPS["mel"]
  per_window_WxM = [music.descriptor(y_N[s:s + one_window.window_samples], one_window)[mel]
                    for s in SHORT.window_starts]
  np.testing.assert_allclose(music.descriptor(y_N, SHORT)[mel],
                             np.mean(per_window_WxM, axis=0), rtol=1e-5)


def test_harmonic_part_equals_librosa():
  y_T = recorded_like("silent stretches", 3.0, seed=6)
  stft_FxN = librosa.stft(y_T)
  np.testing.assert_array_equal(
      music._harmonic(stft_FxN, np.abs(stft_FxN), len(y_T), SHORT),
      numba_cache.first_call_serialised(librosa.effects.harmonic)(y_T))


def recorded_like(kind: str, seconds: float, seed: int) -> np.ndarray:
  """Mono float32 of one kind of material that trips a shortcut of the recipe."""
  rng = np.random.default_rng(seed)
  t_T = np.arange(round(seconds * SR)) / SR
  if kind == "harmonic":  # chord progression with harmonics, bass and drums
    return synthetic_music(seconds, seed)
  if kind == "percussive":  # clicks and noise bursts, no pitch
    onsets_T = rng.random(len(t_T)) < 6 / SR
    y_T = np.convolve(onsets_T * rng.uniform(-1, 1, len(t_T)),
                      np.exp(-np.arange(SR // 20) / (SR / 400)))[:len(t_T)]
    y_T += rng.standard_normal(len(t_T)) * np.exp(-(t_T % 0.37) / 0.02) * 0.3
  elif kind == "detuned":  # A440 drifting 14-18 cents sharp, across a tuning-bin edge
    hz_T = 440 * 2 ** ((16 + 2 * np.sin(2 * np.pi * t_T / seconds)) / 1200)
    phase_T = 2 * np.pi * np.cumsum(hz_T) / SR
    y_T = sum(np.sin(h * phase_T) / h for h in range(1, 6))
    y_T *= 1 + 0.5 * np.sin(2 * np.pi * 0.7 * t_T)
    y_T += 0.01 * rng.standard_normal(len(t_T))
  elif kind == "silent stretches":  # music with digital silence, one window's worth
    y_T = synthetic_music(seconds, seed, detune_cents=-16).astype(np.float64)
    y_T[(t_T > 0.4 * seconds) & (t_T < 0.8 * seconds)] = 0
    y_T[(t_T > 0.1 * seconds) & (t_T < 0.15 * seconds)] = 0
  return (0.9 * y_T / np.abs(y_T).max()).astype(np.float32)


def family_errors(desc_193: np.ndarray, ref_193: np.ndarray) -> dict[str, float]:
  return {group: float(np.linalg.norm(desc_193[dims] - ref_193[dims])
                       / max(np.linalg.norm(ref_193[dims]), 1e-12))
          for group, dims in music.GROUPS.items()}


@SHORT_CQT
@pytest.mark.parametrize("cfg, kind, seconds", [
    (SHORT, "harmonic", 6), (SHORT, "percussive", 6), (SHORT, "detuned", 6),
    (SHORT, "silent stretches", 6), (PAPER, "silent stretches", 60)])
def test_descriptor_equals_the_literal_recipe(cfg, kind, seconds):
  segment_N = recorded_like(kind, seconds, seed=len(kind))
  desc_193 = music.descriptor(segment_N, cfg)
  ref_193 = music.reference_descriptor(segment_N, cfg)
  assert desc_193.shape == ref_193.shape == (music.DESCRIPTOR_DIM,)
  assert desc_193.dtype == ref_193.dtype == np.float32
  errors = family_errors(desc_193, ref_193)
  assert max(errors.values()) <= EXACT, (
      f"descriptor differs from the literal recipe on {kind} audio: {errors}. Every "
      "family must equal the reference up to float rounding; a shortcut shared "
      "across windows (tuning, harmonic part, edges) shows in tonnetz first.")


@SHORT_CQT
def test_fast_mode_is_an_opt_in_that_only_moves_tonnetz():
  assert music.DescriptorConfig().mode == "exact"
  with pytest.raises(ValueError, match="mode"):
    music.DescriptorConfig(mode="approximate")
  segment_N = recorded_like("harmonic", 6, seed=3)
  errors = family_errors(music.descriptor(segment_N, dataclasses.replace(SHORT, mode="fast")),
                         music.descriptor(segment_N, SHORT))
  assert max(errors[g] for g in errors if g != "tonnetz") <= EXACT, errors
  assert 1e-4 < errors["tonnetz"] < 0.2, errors


@pytest.mark.parametrize("shape", [(40, 431), (1025, 9), (3, 1)])
def test_sliding_median_equals_scipy_with_ties_and_short_rows(shape):
  rng = np.random.default_rng(sum(shape))
  x_RxN = rng.gamma(0.5, size=shape).astype(np.float32)
  x_RxN[:, ::3] = 0  # ties, as in silent stretches
  x_RxN[rng.random(shape) < 0.2] = 1.0
  np.testing.assert_array_equal(
      music._median_rows(x_RxN),
      scipy.ndimage.median_filter(x_RxN, size=(1, 31), mode="reflect"))


@pytest.mark.parametrize("kind", ["detuned", "percussive"])
def test_tuning_estimate_equals_librosa(kind):
  y_T = recorded_like(kind, 2, seed=5)
  for mag_FxN in [np.abs(librosa.stft(y_T)), np.abs(librosa.stft(y_T, n_fft=1024))]:
    for bins_per_octave in [12, 36]:
      # librosa's piptrack compiles a numba kernel: serialised as the module's own calls are.
      expected = numba_cache.first_call_serialised(librosa.estimate_tuning)(
          S=mag_FxN, sr=SR, bins_per_octave=bins_per_octave)
      assert music._estimate_tuning(mag_FxN, SR, bins_per_octave) == expected


@SHORT_CQT
@pytest.mark.parametrize("sr, tuning", [(SR, -0.5), (SR, 0.49), (44100, 0.1)])
def test_cqt_with_cached_filters_equals_librosa(sr, tuning):
  y_T = librosa.resample(recorded_like("harmonic", 2, seed=1), orig_sr=SR, target_sr=sr)
  expected_CxN = np.abs(librosa.cqt(y_T, sr=sr, n_bins=7 * 36, bins_per_octave=36,
                                    tuning=tuning))
  np.testing.assert_allclose(music._cqt_magnitude(y_T, sr, 512, tuning), expected_CxN,
                             rtol=0, atol=1e-5 * np.abs(expected_CxN).max())


def write(path: pathlib.Path, wave_TxC: np.ndarray, rate: int) -> str:
  sf.write(path, wave_TxC, rate)
  return str(path)


@pytest.mark.parametrize("rate, suffix", [
    (44100, "flac"), (48000, "wav"), (48000, "mp3"), (SR, "ogg")])
def test_stereo_and_other_rates_are_averaged_and_resampled(tmp_path, rate, suffix):
  t_T = np.arange(3 * rate) / rate
  left_T = 0.5 * np.sin(2 * np.pi * 440 * t_T)
  path = write(tmp_path / f"a.{suffix}", np.stack([left_T, 0.5 * left_T], axis=1), rate)
  y_T = music.load_audio(path, SR)
  assert y_T.dtype == np.float32 and abs(len(y_T) - 3 * SR) <= 1
  spectrum_F = np.abs(np.fft.rfft(y_T[SR // 2:-SR // 2]))
  assert np.argmax(spectrum_F) * SR / (len(y_T) - 2 * (SR // 2)) == pytest.approx(440, abs=1)
  # The mono mix of 0.5 and 0.25 amplitude channels is a 0.375 amplitude sine.
  assert np.sqrt(2) * y_T[SR // 2:-SR // 2].std() == pytest.approx(0.375, rel=0.02)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_decoded_channels_average_as_numpys_mean(tmp_path, channels):
  """The block-by-block mix-down gives `mean(axis=1)` of the whole file, bit for bit,
  across block boundaries (the file is 2.5 blocks long)."""
  frames = music._BLOCK_FRAMES * 5 // 2
  x_TxC = np.random.default_rng(channels).uniform(-1, 1, (frames, channels)).astype(np.float32)
  path = str(tmp_path / "many.wav")
  sf.write(path, x_TxC, SR, subtype="FLOAT")
  y_T, rate = music._decode(path)
  assert rate == SR
  np.testing.assert_array_equal(y_T, sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1))


def test_opposite_channels_average_to_silence(tmp_path):
  y_T = synthetic_music(7.0, seed=2)
  path = write(tmp_path / "phase.wav", np.stack([y_T, -y_T], axis=1), SR)
  with pytest.raises(music.AudioError) as e:
    music.song_descriptors(path, SHORT)
  assert e.value.reason == "silent"


def test_song_descriptors_of_a_stereo_44k_file(tmp_path):
  y_T = synthetic_music(14.0, seed=3, sr=44100)
  path = write(tmp_path / "song.flac", np.stack([y_T, 0.8 * y_T], axis=1), 44100)
  desc_Sx193 = music.song_descriptors(path, SHORT)
  assert desc_Sx193.shape == (2, music.DESCRIPTOR_DIM) and desc_Sx193.dtype == np.float32
  assert np.isfinite(desc_Sx193).all()
  segments_SxN = music.segment(music.load_audio(path, SR), SHORT)
  np.testing.assert_array_equal(desc_Sx193[1], music.descriptor(segments_SxN[1], SHORT))


# Records, in a fresh interpreter with an empty numba cache, whether the lock was held
# at each write to the cache, through importing `module` and a first use of librosa.
_CACHE_WRITE_PROBE = """
import os, sys
held = []
def hook(event, args):
  # numba's index (.nbi) and code (.nbc) files, written as `<name>.tmp.<uid>` first
  if (event == "open" and str(args[0]).startswith(os.environ["NUMBA_CACHE_DIR"])
      and ".nb" in os.path.basename(str(args[0])) and "w" in (args[1] or "")):
    held.append(sys.modules["acp_jax.features.numba_cache"]._lock_held)
sys.addaudithook(hook)
import {module}
import librosa
import numpy as np
librosa.util.localmax(np.zeros(4))
librosa.zero_crossings(np.zeros(4))
print(len(held), all(held))
"""


@pytest.mark.parametrize("module", ["acp_jax.features.music", "acp_jax.features.spectrogram"])
def test_librosa_compiles_its_gufuncs_under_the_numba_lock(tmp_path, module):
  """librosa compiles numba gufuncs into the shared cache as its modules load, at their
  first use. Done by two processes at once on a fresh install (xdist workers, Beam's
  workers), that wrote a cache on which every later process segfaulted in
  `librosa.util.localmax` or `peak_pick` (numba #10128), until it was serialised."""
  env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
  out = subprocess.run([sys.executable, "-c", _CACHE_WRITE_PROBE.format(module=module)],
                       capture_output=True, text=True, check=True, env=env).stdout
  writes, all_held = out.split()[-2:]
  assert int(writes) > 0 and all_held == "True", out


def test_song_descriptors_can_go_to_a_process_pool():
  function, cfg = pickle.loads(pickle.dumps((music.song_descriptors, SHORT)))
  assert function is music.song_descriptors and cfg == SHORT


@pytest.mark.parametrize("wave_T, reason", [
    (np.zeros(7 * SR), "silent"),
    (1e-4 * np.random.default_rng(0).standard_normal(7 * SR), "silent"),
    (synthetic_music(5.0, seed=4), "shorter than one segment"),
    (np.zeros(0), "empty"),
    (np.full(7 * SR, np.nan), "non-finite"),
])
def test_bad_audio_raises_audio_error_with_reason(tmp_path, wave_T, reason):
  path = str(tmp_path / "x.wav")
  sf.write(path, wave_T, SR, subtype="FLOAT")
  with pytest.raises(music.AudioError) as e:
    music.song_descriptors(path, SHORT)
  assert e.value.reason == reason, str(e.value)


def broken_file(directory: pathlib.Path, kind: str) -> str:
  """A file in `directory` that is missing, garbage, empty, or cut in half."""
  path = directory / {"garbage": "x.mp3", "cut flac": "x.flac", "cut mp3": "x.mp3"}.get(
      kind, "x.wav")
  if kind == "zero bytes":
    path.write_bytes(b"")
  elif kind == "header only":
    sf.write(path, np.zeros(0), SR)
  elif kind == "garbage":
    path.write_bytes(b"not audio at all" * 64)
  elif kind.startswith("cut"):
    sf.write(path, synthetic_music(3.0, seed=5), SR)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  return str(path)


@pytest.mark.parametrize("kind, reason", [
    ("missing", "unreadable"), ("garbage", "unreadable"), ("zero bytes", "empty"),
    ("header only", "empty"), ("cut flac", "truncated"), ("cut mp3", "truncated")])
def test_broken_files_raise_audio_error_with_reason(tmp_path, kind, reason):
  with pytest.raises(music.AudioError) as e:
    music.load_audio(broken_file(tmp_path, kind), SR)
  assert e.value.reason == reason, str(e.value)
