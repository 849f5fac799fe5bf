"""The paper's 193-d music descriptor (ACP-Net, section 4), from audio file to vectors.

A song is cut into non-overlapping segments (60 s by default). Each segment is
described by 40 MFCC + 12 chroma + 7 spectral contrast + 6 tonnetz + 128 mel, each
the mean over the frames of a window (10 s windows, 5 s hop, inside the segment),
then averaged over the segment's windows.

Two implementations of that contract:
  * `reference_descriptor` runs the well-known librosa recipe literally on every
    window; it is the definition that `descriptor` is tested against.
  * `descriptor` computes the same vector (every family within float rounding) on
    one core over 10x faster, by dropping the recipe's repeated work and librosa's
    per-call overheads; `DescriptorConfig(mode="fast")` is an approximate opt-in.
`song_descriptors` is the file-to-matrix entry point for the dataset builder.
"""

import dataclasses
import functools
import itertools
import os

import av
import librosa
import numba
import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf
import soxr
import threadpoolctl

from acp_jax.features import numba_cache

_GROUP_SIZES = {"mfcc": 40, "chroma": 12, "contrast": 7, "tonnetz": 6, "mel": 128}
DESCRIPTOR_DIM = sum(_GROUP_SIZES.values())
GROUPS: dict[str, slice] = {
    name: slice(end - size, end)
    for (name, size), end in zip(_GROUP_SIZES.items(),
                                 itertools.accumulate(_GROUP_SIZES.values()))}

# librosa.decompose.hpss's default median-filter length, in frames and in bins.
_HPSS_KERNEL = 31
# What librosa.feature.tonnetz -> chroma_cqt -> cqt use by default: 7 octaves of
# 36 bins from C1, tuned by estimate_tuning, whose piptrack looks at 150-4000 Hz
# peaks above a tenth of their frame's maximum, on an STFT of its own default size.
_CQT_OCTAVES = 7
_CQT_BINS_PER_OCTAVE = 36
_CQT_SPARSITY = 0.01
_PIPTRACK_HZ = (150.0, 4000.0)
_PIPTRACK_THRESHOLD = 0.1
_PIPTRACK_N_FFT = 2048
_TUNING_RESOLUTION = 0.01

@dataclasses.dataclass(frozen=True)
class DescriptorConfig:
  """How songs are cut and framed; the defaults are the paper's and librosa's."""
  sample_rate: int = 22050       # Hz; audio is resampled to this rate
  segment_seconds: float = 60.0  # songs are cut into non-overlapping segments this long
  window_seconds: float = 10.0   # features are frame means over windows this long
  hop_seconds: float = 5.0       # step between window starts inside a segment
  n_fft: int = 2048              # STFT size in samples
  hop_length: int = 512          # STFT hop in samples
  silence_dbfs: float = -60.0    # songs whose RMS level is below this are rejected
  mode: str = "exact"            # "exact": equals the recipe; "fast": see `descriptor`

  def __post_init__(self):
    if self.mode not in _WINDOW_TONNETZ:
      raise ValueError(f"mode={self.mode!r} must be one of {sorted(_WINDOW_TONNETZ)}.")
    if not 0 < self.window_seconds <= self.segment_seconds:
      raise ValueError(
          f"window_seconds={self.window_seconds} must be positive and at most "
          f"segment_seconds={self.segment_seconds}; shorten the window or lengthen "
          "the segment.")
    if self.hop_samples < 1:
      raise ValueError(f"hop_seconds={self.hop_seconds} must be at least one sample.")
    if self.window_samples < self.n_fft:
      raise ValueError(
          f"A {self.window_seconds} s window holds {self.window_samples} samples, fewer "
          f"than n_fft={self.n_fft}; use a longer window or a smaller n_fft.")

  @property
  def segment_samples(self) -> int:
    return round(self.segment_seconds * self.sample_rate)

  @property
  def window_samples(self) -> int:
    return round(self.window_seconds * self.sample_rate)

  @property
  def hop_samples(self) -> int:
    return round(self.hop_seconds * self.sample_rate)

  @property
  def window_starts(self) -> np.ndarray:
    """Sample offsets of the full windows that fit in a segment (11 by default)."""
    return np.arange(0, self.segment_samples - self.window_samples + 1, self.hop_samples)


class AudioError(ValueError):
  """Audio that cannot be described; `reason` is a short string to count skips by."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
  """Decodes a file to float32 mono at `sample_rate` (channels averaged, resampled).

  libsndfile reads wav/flac/ogg/mp3; other formats (m4a/aac, ...) go through the
  FFmpeg that the `av` package ships. Channels are averaged block by block as the file
  decodes, so a long stereo song is held once, as mono. Raises AudioError with reason
  'unreadable', 'empty', 'truncated' or 'non-finite'.
  """
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise AudioError("unreadable", f"Cannot open {path} ({e}); check that it exists and "
                     "is readable.") from e
  if size == 0:
    raise AudioError("empty", f"{path} is an empty file; download it again.")
  y_T, file_rate = _decode(path)
  if not len(y_T):
    raise AudioError("empty", f"{path} decodes to zero samples: it is empty or cut off "
                     "before its first audio block; download or re-encode it.")
  if not np.isfinite(y_T).all():
    raise AudioError("non-finite", f"{path} holds NaN/Inf samples; re-encode it from "
                     "the source.")
  if file_rate != sample_rate:
    y_T = librosa.resample(y_T, orig_sr=file_rate, target_sr=sample_rate)
  return y_T.astype(np.float32, copy=False)


_BLOCK_FRAMES = 1 << 16  # frames decoded per block before the channels are averaged


def _decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """(mono samples T, rate) at the file's rate, through libsndfile where it can."""
  try:
    f = sf.SoundFile(path)
  except sf.SoundFileError:
    return _decode_av(path)
  with f:
    y_T = np.empty(f.frames, np.float32)
    block_BxC = np.empty((min(_BLOCK_FRAMES, f.frames), f.channels), np.float32)
    n = 0
    try:
      while n < f.frames:
        read_BxC = f.read(out=block_BxC[:f.frames - n])
        if not len(read_BxC):
          break
        _mean_channels(read_BxC, y_T[n:n + len(read_BxC)])
        n += len(read_BxC)
    except sf.SoundFileError as e:
      raise AudioError("truncated", f"{path} stops decoding part-way ({e}): it is cut "
                       "off or corrupt; download it again.") from e
  # libsndfile trims a WAV's length to the bytes present, so a cut-off WAV loads as a
  # shorter song; compressed formats declare their length and show the cut here.
  if n < f.frames:
    raise AudioError("truncated", f"{path} declares {f.frames} frames but decodes "
                     f"{n}: it is cut off; download it again.")
  return y_T, f.samplerate


def _mean_channels(x_BxC: np.ndarray, out_B: np.ndarray) -> None:
  """out_B = x_BxC.mean(axis=1), the same values: the channels added in order, then
  divided. numpy reduces a short inner axis frame by frame, which cost more than
  decoding the MP3 (0.66 against 0.62 ms per second of 44.1 kHz stereo); this is ~30x
  faster."""
  np.copyto(out_B, x_BxC[:, 0])
  for c in range(1, x_BxC.shape[1]):
    out_B += x_BxC[:, c]
  out_B /= x_BxC.shape[1]


def _decode_av(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """Formats libsndfile lacks (m4a/aac, ...): the first audio stream, through FFmpeg."""
  chunks = []
  try:
    with av.open(os.fspath(path)) as container:
      stream = container.streams.audio[0]
      to_float = av.AudioResampler(format="fltp")  # planar float32, same rate and layout
      for frame in itertools.chain(container.decode(stream), [None]):
        for out in to_float.resample(frame):
          chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
      rate = stream.codec_context.sample_rate
  except (av.FFmpegError, IndexError, OSError) as e:
    reason = "truncated" if chunks else "unreadable"
    raise AudioError(reason, f"Cannot decode {path} ({type(e).__name__}: {e}); convert it "
                     "to FLAC or WAV, or download it again.") from e
  return np.concatenate(chunks) if chunks else np.zeros(0, np.float32), rate


def segment(y_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """S x segment_samples non-overlapping segments of `y_T`; the shorter tail is dropped."""
  n = cfg.segment_samples
  count = len(y_T) // n
  if count == 0:
    raise AudioError("shorter than one segment",
                     f"{len(y_T) / cfg.sample_rate:.1f} s of audio is shorter than one "
                     f"{cfg.segment_seconds} s segment; lower segment_seconds to keep it.")
  return y_T[:count * n].reshape(count, n)


@numba_cache.first_call_serialised
def reference_descriptor(segment_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """The literal librosa recipe on each window, averaged over windows: (193,) float32."""
  _check_length(segment_T, cfg)
  sr, kw = cfg.sample_rate, dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length)
  desc_Wx193 = []
  for start in cfg.window_starts:
    y = segment_T[start:start + cfg.window_samples]
    stft = np.abs(librosa.stft(y, **kw))
    desc_Wx193.append(_frame_means(
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=_GROUP_SIZES["mfcc"], **kw),
        librosa.feature.chroma_stft(S=stft, sr=sr, **kw),
        librosa.feature.spectral_contrast(S=stft, sr=sr, **kw),
        librosa.feature.tonnetz(y=librosa.effects.harmonic(y, **kw), sr=sr,
                                hop_length=cfg.hop_length),
        librosa.feature.melspectrogram(y=y, sr=sr, **kw)))
  return np.mean(desc_Wx193, axis=0).astype(np.float32)


# One BLAS thread: the products are small, a build describes one song per core (where
# BLAS threads spin against each other: 2.6x the CPU time on 2 cores), and the values
# then do not depend on the machine's core count.
@threadpoolctl.threadpool_limits.wrap(limits=1)
@numba_cache.first_call_serialised
def descriptor(segment_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """`reference_descriptor`'s (193,) float32 vector, without the recipe's repeated work.

  Windows overlap by half, but their STFT frames do not line up (a 5 s hop is not a
  multiple of 512 samples), so every step stays per window; what goes is the repeated
  work inside a window and librosa's per-call overheads. Per window, one STFT feeds
  mel, MFCC, chroma, contrast and the harmonic separation (the recipe computes four);
  the separation's median filters slide sorted windows over 16 rows at once; tuning
  is estimated from the spectral peaks in piptrack's band only; mel, chroma and CQT
  filters are built once per tuning value. The harmonic signal and both tuning
  estimates equal librosa's bit for bit, so each window picks the recipe's tuning even
  where a song sits on a tuning-bin edge; the CQT rounds differently (~3e-7), so every
  family equals the reference's up to float rounding.

  cfg.mode "exact" (the default) is that. cfg.mode "fast" (opt-in) separates the
  harmonic part and runs the CQT once over the whole segment with one tuning, and
  each window averages its span of those frames: 1.3-1.4x faster overall, but
  tonnetz then differs by up to a few percent (window edges see neighbouring audio
  instead of zero padding, and songs tuned near a third-of-a-semitone boundary, ~16
  cents off A440, get one tuning where the recipe flips between windows).
  """
  _check_length(segment_T, cfg)
  y_T = np.asarray(segment_T, np.float32)
  window_tonnetz = _WINDOW_TONNETZ[cfg.mode](y_T, cfg)
  desc_Wx193 = []
  for w, start in enumerate(cfg.window_starts):
    stft_FxN = _stft(y_T[start:start + cfg.window_samples], cfg)
    mag_FxN = np.abs(stft_FxN)
    mfcc, chroma, contrast, mel = _stft_features(mag_FxN, cfg)
    desc_Wx193.append(_frame_means(mfcc, chroma, contrast,
                                   window_tonnetz(w, stft_FxN, mag_FxN), mel))
  return np.mean(desc_Wx193, axis=0).astype(np.float32)


def _check_length(segment_T: np.ndarray, cfg: DescriptorConfig) -> None:
  if len(segment_T) != cfg.segment_samples:
    raise ValueError(
        f"Expected a segment of {cfg.segment_samples} samples ({cfg.segment_seconds} s at "
        f"{cfg.sample_rate} Hz), got {len(segment_T)}; cut songs with segment(y_T, cfg).")


def _frame_means(*features_CxN: np.ndarray) -> np.ndarray:
  """One window's 193-d vector: each group's mean over frames, in GROUPS order."""
  return np.concatenate([f.mean(axis=1) for f in features_CxN])


def _stft(y_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  return librosa.stft(y_T, n_fft=cfg.n_fft, hop_length=cfg.hop_length)


def _stft_features(mag_FxN: np.ndarray, cfg: DescriptorConfig) -> tuple[np.ndarray, ...]:
  """(MFCC, chroma, contrast, mel) of one window from its STFT magnitude, as the recipe.

  melspectrogram and chroma_stft with their filter banks cached (librosa rebuilds them
  on every call); the products and normalisations are theirs.
  """
  sr, n_fft = cfg.sample_rate, cfg.n_fft
  mel_MxN = np.einsum("...ft,mf->...mt", mag_FxN**2, _mel_filters(sr, n_fft), optimize=True)
  tuning = _estimate_tuning(mag_FxN, sr, bins_per_octave=_GROUP_SIZES["chroma"])
  chroma_filters_CxF = _chroma_filters(sr, n_fft, tuning)
  chroma_CxN = librosa.util.normalize(
      np.einsum("cf,...ft->...ct", chroma_filters_CxF, mag_FxN, optimize=True),
      norm=np.inf, axis=-2)
  return (librosa.feature.mfcc(S=librosa.power_to_db(mel_MxN), n_mfcc=_GROUP_SIZES["mfcc"]),
          chroma_CxN,
          librosa.feature.spectral_contrast(S=mag_FxN, sr=sr, n_fft=n_fft),
          mel_MxN)


@functools.lru_cache(maxsize=8)
def _mel_filters(sr: int, n_fft: int) -> np.ndarray:
  return librosa.filters.mel(sr=sr, n_fft=n_fft)


@functools.lru_cache(maxsize=256)
def _chroma_filters(sr: int, n_fft: int, tuning: float) -> np.ndarray:
  return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning)


def _exact_tonnetz(y_T: np.ndarray, cfg: DescriptorConfig):
  """(window index, its STFT, magnitude) -> its tonnetz frames, from that window alone."""
  del y_T  # each window's tonnetz needs only the window
  return lambda w, stft_FxN, mag_FxN: _tonnetz(
      _harmonic(stft_FxN, mag_FxN, cfg.window_samples, cfg), cfg)


def _fast_tonnetz(y_T: np.ndarray, cfg: DescriptorConfig):
  """(window index, ...) -> its span of the whole segment's tonnetz frames (nearest)."""
  stft_FxT = _stft(y_T, cfg)
  tonnetz_6xT = _tonnetz(_harmonic(stft_FxT, np.abs(stft_FxT), len(y_T), cfg), cfg)
  n_frames = 1 + cfg.window_samples // cfg.hop_length
  firsts = [min(round(start / cfg.hop_length), tonnetz_6xT.shape[1] - n_frames)
            for start in cfg.window_starts]
  return lambda w, stft_FxN, mag_FxN: tonnetz_6xT[:, firsts[w]:firsts[w] + n_frames]


_WINDOW_TONNETZ = {"exact": _exact_tonnetz, "fast": _fast_tonnetz}


@numba_cache.first_call_serialised
def _harmonic(stft_FxN: np.ndarray, mag_FxN: np.ndarray, length: int,
              cfg: DescriptorConfig) -> np.ndarray:
  """librosa.effects.harmonic of the signal whose STFT is `stft_FxN`, same values."""
  harm_FxN = _median_rows(mag_FxN)
  perc_FxN = _median_rows(mag_FxN.T).T
  stft_NxF = np.ascontiguousarray(stft_FxN.T)  # librosa's STFTs are column-major: no copy
  harmonic_NxF = np.empty_like(stft_NxF)
  _soft_harmonic(stft_NxF.view(np.float32), mag_FxN.T, harm_FxN.T, perc_FxN.T,
                 harmonic_NxF.view(np.float32))
  return _istft(harmonic_NxF.T, length, cfg)


def _istft(stft_FxN: np.ndarray, length: int, cfg: DescriptorConfig) -> np.ndarray:
  """librosa.istft(stft_FxN, n_fft=..., hop_length=..., length=length), same values,
  with its window envelope cached (librosa recomputes it on every call)."""
  n_fft, hop = cfg.n_fft, cfg.hop_length
  n_frames = min(stft_FxN.shape[1], int(np.ceil((length + 2 * (n_fft // 2)) / hop)))
  frames_NxL = np.fft.irfft(stft_FxN[:, :n_frames], n=n_fft, axis=0).T * _hann(n_fft)
  padded_P = np.zeros(max(n_fft + hop * (n_frames - 1), n_fft // 2 + length), np.float32)
  _overlap_add(padded_P, frames_NxL, hop)
  y_T = padded_P[n_fft // 2:n_fft // 2 + length]
  nonzero_T, envelope_E = _istft_envelope(n_fft, hop, n_frames, length)
  y_T[nonzero_T] /= envelope_E
  return y_T


@numba.njit(cache=True, nogil=True)
def _overlap_add(y_P, frames_NxL, hop):  # pragma: no cover  (compiled)
  """Adds the frames in order into float32 samples, as librosa.istft's own kernel."""
  for j in range(frames_NxL.shape[0]):
    for k in range(frames_NxL.shape[1]):
      y_P[j * hop + k] += frames_NxL[j, k]


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
  return scipy.signal.get_window("hann", n_fft, fftbins=True)


@functools.lru_cache(maxsize=8)
def _istft_envelope(n_fft: int, hop: int, n_frames: int, length: int):
  """Where librosa.istft divides by its squared-window sum, and by what."""
  envelope_T = librosa.filters.window_sumsquare(
      window="hann", n_frames=n_frames, win_length=n_fft, n_fft=n_fft, hop_length=hop,
      dtype=np.float32)
  envelope_T = librosa.util.fix_length(envelope_T[n_fft // 2:], size=length)
  nonzero_T = envelope_T > librosa.util.tiny(envelope_T)
  return nonzero_T, envelope_T[nonzero_T]


@numba_cache.first_call_serialised
def _median_rows(x_RxN: np.ndarray) -> np.ndarray:
  """scipy.ndimage.median_filter(x_RxN, size=(1, 31), mode='reflect'), same values."""
  out_RxN = np.empty(x_RxN.shape, np.float32)
  _sliding_median(np.ascontiguousarray(x_RxN, np.float32), out_RxN)
  return out_RxN


_LANES = 16  # rows filtered together, one per SIMD lane


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _sliding_median(x_RxN, out_RxN):  # pragma: no cover  (compiled)
  """Median of each row's `_HPSS_KERNEL` neighbours; rows reflect at their ends (abc|cba).

  Each row keeps its window sorted; a step drops the outgoing value and inserts the
  incoming one with branch-free min/max over the window, for 16 rows at once so that
  the compiler runs the lanes in SIMD (3-5x faster than scipy's 1-D filter).
  """
  kernel = _HPSS_KERNEL  # a compile-time constant: LLVM unrolls the window's loop (1.1x)
  rows, n = x_RxN.shape
  reach = kernel // 2
  padded_PxL = np.empty((n + 2 * reach, _LANES), np.float32)
  sorted_KxL = np.empty((kernel + 1, _LANES), np.float32)
  sorted_KxL[kernel] = np.inf  # sentinel above the window
  below_L = np.empty(_LANES, np.float32)
  for r0 in range(0, rows, _LANES):
    lanes = min(_LANES, rows - r0)
    for j in range(n + 2 * reach):
      k = (j - reach) % (2 * n)
      k = 2 * n - 1 - k if k >= n else k
      for lane in range(_LANES):
        padded_PxL[j, lane] = x_RxN[r0 + min(lane, lanes - 1), k]
    for lane in range(_LANES):
      sorted_KxL[:kernel, lane] = np.sort(padded_PxL[:kernel, lane])
    for lane in range(lanes):
      out_RxN[r0 + lane, 0] = sorted_KxL[reach, lane]
    for c in range(1, n):
      old_L, new_L = padded_PxL[c - 1], padded_PxL[c - 1 + kernel]
      for lane in range(_LANES):
        below_L[lane] = -np.inf
      for i in range(kernel):
        for lane in range(_LANES):
          here = sorted_KxL[i, lane]
          # Position i of the window without `old`, then with `new` inserted. In the
          # second line min(kept, new) is new; spelt so, LLVM vectorises the lanes.
          kept = sorted_KxL[i + 1, lane] if here >= old_L[lane] else here
          sorted_KxL[i, lane] = (max(below_L[lane], min(kept, new_L[lane]))
                                 if kept >= new_L[lane] else kept)
          below_L[lane] = kept
      for lane in range(lanes):
        out_RxN[r0 + lane, c] = sorted_KxL[reach, lane]


@numba.njit(cache=True, nogil=True)
def _soft_harmonic(stft_Nx2F, mag_NxF, harm_NxF, perc_NxF, out_Nx2F):  # pragma: no cover
  """hpss's harmonic STFT, (mag * mask) * phase, on (real, imag) pairs, with the float32
  steps of librosa.util.softmask(harm, perc, power=2, split_zeros=True) for the mask
  and of librosa.magphase for the phase (0 / 0 -> 1 + 0j)."""
  tiny = np.finfo(np.float32).tiny
  for n in range(mag_NxF.shape[0]):
    for f in range(mag_NxF.shape[1]):
      h, p, m = harm_NxF[n, f], perc_NxF[n, f], mag_NxF[n, f]
      z = max(h, p)
      if z < tiny:
        mask = np.float32(0.5)
      else:
        h, p = h / z, p / z
        h, p = h * h, p * p
        mask = h / (h + p)
      zero = np.float32(m == 0)
      s = m * mask
      out_Nx2F[n, 2 * f] = s * (stft_Nx2F[n, 2 * f] / (m + zero) + zero)
      out_Nx2F[n, 2 * f + 1] = s * (stft_Nx2F[n, 2 * f + 1] / (m + zero))


def _tonnetz(harmonic_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """6 x frames: librosa.feature.tonnetz(y=harmonic_T, sr=..., hop_length=...)."""
  tuning = _estimate_tuning(np.abs(librosa.stft(harmonic_T, n_fft=_PIPTRACK_N_FFT)),
                            cfg.sample_rate, bins_per_octave=_CQT_BINS_PER_OCTAVE)
  cqt_CxT = _cqt_magnitude(harmonic_T, cfg.sample_rate, cfg.hop_length, tuning)
  return librosa.feature.tonnetz(chroma=librosa.feature.chroma_cqt(
      C=cqt_CxT, bins_per_octave=_CQT_BINS_PER_OCTAVE))


def _estimate_tuning(mag_FxN: np.ndarray, sr: int, bins_per_octave: int) -> float:
  """librosa.estimate_tuning(S=mag_FxN, sr=sr, bins_per_octave=...), same value.

  piptrack interpolates and thresholds every bin, then keeps the peaks in its band;
  here only the band's peaks are interpolated, with piptrack's float steps (its
  numba stencil computes the parabola in float64 and stores float32).
  """
  n_fft = 2 * (mag_FxN.shape[0] - 1)
  hz_F = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
  band = np.flatnonzero((_PIPTRACK_HZ[0] <= hz_F) & (hz_F < min(_PIPTRACK_HZ[1], sr / 2)))
  lo, hi = band[0], band[-1] + 1  # lo >= 1 and hi <= F - 1: both neighbours exist
  ref_1xN = _PIPTRACK_THRESHOLD * mag_FxN.max(axis=0, keepdims=True)
  s_BxN = mag_FxN[lo - 1:hi + 1]
  kept_BxN = s_BxN * (s_BxN > ref_1xN)
  peak_bxN = (kept_BxN[1:-1] > kept_BxN[:-2]) & (kept_BxN[1:-1] >= kept_BxN[2:])
  b, n = np.nonzero(peak_bxN)
  below, at, above = s_BxN[b, n], s_BxN[b + 1, n], s_BxN[b + 2, n]
  curve = (above + below).astype(np.float64) - 2 * at.astype(np.float64)
  slope = (above - below).astype(np.float64) / 2
  with np.errstate(divide="ignore", invalid="ignore"):
    shift = np.where(np.abs(slope) >= np.abs(curve), 0.0, -slope / curve).astype(np.float32)
  pitch = ((b + lo + shift) * float(sr) / n_fft).astype(np.float32)
  mag = at + np.float32(0.5) * ((above - below) / 2.0) * shift
  positive = pitch > 0
  threshold = np.median(mag[positive]) if positive.any() else 0.0
  return librosa.pitch_tuning(pitch[(mag >= threshold) & positive],
                              resolution=_TUNING_RESOLUTION,
                              bins_per_octave=bins_per_octave)


def _cqt_magnitude(y_T: np.ndarray, sr: int, hop_length: int, tuning: float) -> np.ndarray:
  """np.abs(librosa.cqt(y_T, ...)) with chroma_cqt's defaults and the given tuning.

  librosa.cqt rebuilds its filters on every call, which costs more than the transform
  of a 10 s window; they depend only on (sr, hop_length, tuning), and estimate_tuning
  returns one of 100 values, so they are built once per value.
  """
  down, octaves, scale_C = _cqt_filters(sr, hop_length, tuning)
  if down > 1:
    y_T = _halve(y_T, down)
  responses, last_hop = [], hop_length // down
  for basis_BxF, hop in octaves:
    if hop < last_hop:
      y_T, last_hop = _halve(y_T, 2), hop
    n_fft = 2 * (basis_BxF.shape[1] - 1)
    frames_NxL = np.lib.stride_tricks.sliding_window_view(np.pad(y_T, n_fft // 2), n_fft)
    # Transforming along axis 0 leaves the spectrum row-major, as the sparse product
    # wants it (a transposed copy would cost more than the FFT).
    responses.append(basis_BxF @ scipy.fft.rfft(frames_NxL[::hop].T, axis=0))
  n_frames = min(r.shape[1] for r in responses)
  cqt_CxN = np.concatenate([r[:, :n_frames] for r in responses[::-1]])
  return np.abs(cqt_CxN) * scale_C[:, None]


def _halve(y_T: np.ndarray, factor: int) -> np.ndarray:
  """y_T at 1/factor of its rate, resampled as librosa.cqt does between octaves."""
  y_T = soxr.resample(y_T, factor, 1, quality="soxr_hq")
  y_T /= np.sqrt(1 / factor)
  return y_T


@functools.lru_cache(maxsize=256)
def _cqt_filters(sr: int, hop_length: int, tuning: float):
  """librosa.cqt's plan, as its vqt builds it: early downsampling factor, (sparse FFT
  filters, hop) per octave from the top, and the per-bin output scale."""
  n_bins = _CQT_OCTAVES * _CQT_BINS_PER_OCTAVE
  fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / _CQT_BINS_PER_OCTAVE)
  freqs = librosa.interval_frequencies(n_bins, fmin=fmin, intervals="equal",
                                       bins_per_octave=_CQT_BINS_PER_OCTAVE, sort=True)
  _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr)
  # Downsample first by the powers of two that neither the filters' band nor the
  # hops of the lower octaves need.
  twos = (hop_length & -hop_length).bit_length() - 1
  count = min(max(0, int(np.ceil(np.log2(sr / 2 / cutoff)) - 1) - 1),
              max(0, twos - _CQT_OCTAVES + 1))
  down = 2 ** count
  sr, hop = sr / down, hop_length // down
  octaves, octave_sr = [], sr
  for i in range(_CQT_OCTAVES):
    top = n_bins - i * _CQT_BINS_PER_OCTAVE
    basis_BxL, lengths_B = librosa.filters.wavelet(
        freqs=freqs[top - _CQT_BINS_PER_OCTAVE:top], sr=octave_sr)
    n_fft = basis_BxL.shape[1]
    basis_BxL *= lengths_B[:, None] / float(n_fft)
    fft_BxF = np.fft.fft(basis_BxL, n=n_fft, axis=1)[:, :n_fft // 2 + 1]
    basis_BxF = librosa.util.sparsify_rows(fft_BxF, quantile=_CQT_SPARSITY,
                                           dtype=np.complex64)
    octaves.append(((basis_BxF * np.sqrt(sr / octave_sr)).astype(np.complex64), hop))
    if hop % 2 == 0:  # librosa.cqt stops halving once the hop is odd
      hop //= 2
      octave_sr /= 2
  lengths_C, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr)
  return down, tuple(octaves), 1 / np.sqrt(lengths_C)


def song_segments(path: str | os.PathLike, cfg: DescriptorConfig) -> np.ndarray:
  """S x segment_samples: `segment(load_audio(path, ...), cfg)`, the segments a song
  keeps in every dataset config. Raises AudioError (see `load_audio` and `segment`;
  also 'silent' when they are below cfg.silence_dbfs)."""
  segments_SxN = segment(load_audio(path, cfg.sample_rate), cfg)
  rms_dbfs = 10 * np.log10(np.mean(np.square(segments_SxN, dtype=np.float64)) + 1e-20)
  if rms_dbfs < cfg.silence_dbfs:
    raise AudioError("silent", f"{path} is near-silent (RMS {rms_dbfs:.0f} dBFS, below "
                     f"silence_dbfs={cfg.silence_dbfs}); check the file or lower "
                     "silence_dbfs.")
  return segments_SxN


def song_descriptors(path: str | os.PathLike, cfg: DescriptorConfig) -> np.ndarray:
  """S x 193 float32: row s is `descriptor` of `song_segments(path, cfg)[s]`.

  Raises AudioError (see `song_segments`; also 'non-finite' for NaN/Inf features).
  """
  segments_SxN = song_segments(path, cfg)
  desc_Sx193 = np.stack([descriptor(segment_N, cfg) for segment_N in segments_SxN])
  if not np.isfinite(desc_Sx193).all():
    raise AudioError("non-finite", f"{path} gives NaN/Inf features; inspect the audio "
                     "and report it if it plays normally.")
  return desc_Sx193
