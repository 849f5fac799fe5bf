"""The paper's 193-d music descriptor (ACP-Net, section 4), from audio file to vectors.

A song is cut into non-overlapping segments (60 s by default). Each segment is
described by 40 MFCC + 12 chroma + 7 spectral contrast + 6 tonnetz + 128 mel, each
the mean over the frames of a window (10 s windows, 5 s hop, inside the segment),
then averaged over the segment's windows.

Two implementations of that contract:
  * `reference_descriptor` runs the well-known librosa recipe literally on every
    window; it is the definition that `descriptor` is tested against.
  * `descriptor` avoids the recipe's repeated work (about 7x faster on the default
    config): mel, MFCC, chroma and contrast come out equal to the reference's; tonnetz
    differs slightly, see its docstring.
`song_descriptors` is the file-to-matrix entry point for the dataset builder.
"""

import dataclasses
import fcntl
import functools
import itertools
import os
import tempfile

import av
import librosa
import numpy as np
import scipy.ndimage
import soundfile as sf

_GROUP_SIZES = {"mfcc": 40, "chroma": 12, "contrast": 7, "tonnetz": 6, "mel": 128}
DESCRIPTOR_DIM = sum(_GROUP_SIZES.values())
GROUPS: dict[str, slice] = {
    name: slice(end - size, end)
    for (name, size), end in zip(_GROUP_SIZES.items(),
                                 itertools.accumulate(_GROUP_SIZES.values()))}

# librosa.decompose.hpss's default median-filter length, in frames and in bins.
_HPSS_KERNEL = 31

_NUMBA_LOCK_PATH = os.path.join(tempfile.gettempdir(), "acp_jax-librosa-numba.lock")


def _first_call_serialised(fn):
  """Runs each process's first call of `fn` under a machine-wide file lock.

  librosa compiles numba kernels on first use and caches them on disk. Two processes
  compiling the same gufunc at once can write a cache that segfaults every later
  process (numba issue #10128), which is what a fresh install hit with a builder's
  worker pool or parallel tests. Under the lock the first process compiles and the
  others load its cache; later calls take no lock.
  """
  warm = False

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    nonlocal warm
    if warm:
      return fn(*args, **kwargs)
    with open(_NUMBA_LOCK_PATH, "a") as lock_file:  # closing it releases the lock
      fcntl.flock(lock_file, fcntl.LOCK_EX)
      out = fn(*args, **kwargs)
    warm = True
    return out
  return wrapper


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

  def __post_init__(self):
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
        y_T[n:n + len(read_BxC)] = read_BxC.mean(axis=1)
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


@_first_call_serialised
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


@_first_call_serialised
def descriptor(segment_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """`reference_descriptor`'s (193,) float32 vector, computing each costly step once.

  Per window, one STFT feeds mel, MFCC, chroma and contrast (the recipe computes
  three); chroma tuning and the 80 dB floors stay per window, so these four groups
  equal the reference's. The costly part, harmonic separation plus CQT for tonnetz,
  runs once over the whole segment (the recipe redoes it for every overlapping
  window), and each window averages the segment frames nearest its span. Tonnetz
  therefore differs a little: frames near a window's edges see the neighbouring
  audio where the reference sees zero padding, and the CQT uses one tuning estimate
  per segment where the reference estimates one per window (this matters most for
  songs tuned near a third-of-a-semitone boundary, ~16 cents off A440, where the
  reference's own per-window estimate flips).
  """
  _check_length(segment_T, cfg)
  sr, hop, n_fft = cfg.sample_rate, cfg.hop_length, cfg.n_fft
  y_T = np.asarray(segment_T, np.float32)
  tonnetz_6xT = _harmonic_tonnetz(y_T, cfg)
  n_frames = 1 + cfg.window_samples // hop
  desc_Wx193 = []
  for start in cfg.window_starts:
    mag_FxN = np.abs(librosa.stft(y_T[start:start + cfg.window_samples], n_fft=n_fft,
                                  hop_length=hop))
    mel_MxN = librosa.feature.melspectrogram(S=mag_FxN**2, sr=sr, n_fft=n_fft)
    first = min(round(start / hop), tonnetz_6xT.shape[1] - n_frames)
    desc_Wx193.append(_frame_means(
        librosa.feature.mfcc(S=librosa.power_to_db(mel_MxN), n_mfcc=_GROUP_SIZES["mfcc"]),
        librosa.feature.chroma_stft(S=mag_FxN, sr=sr, n_fft=n_fft),
        librosa.feature.spectral_contrast(S=mag_FxN, sr=sr, n_fft=n_fft),
        tonnetz_6xT[:, first:first + n_frames],
        mel_MxN))
  return np.mean(desc_Wx193, axis=0).astype(np.float32)


def _check_length(segment_T: np.ndarray, cfg: DescriptorConfig) -> None:
  if len(segment_T) != cfg.segment_samples:
    raise ValueError(
        f"Expected a segment of {cfg.segment_samples} samples ({cfg.segment_seconds} s at "
        f"{cfg.sample_rate} Hz), got {len(segment_T)}; cut songs with segment(y_T, cfg).")


def _frame_means(*features_CxN: np.ndarray) -> np.ndarray:
  """One window's 193-d vector: each group's mean over frames, in GROUPS order."""
  return np.concatenate([f.mean(axis=1) for f in features_CxN])


def _harmonic_tonnetz(y_T: np.ndarray, cfg: DescriptorConfig) -> np.ndarray:
  """6 x frames: librosa.feature.tonnetz(y=librosa.effects.harmonic(y_T)), faster."""
  stft_FxT = librosa.stft(y_T, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
  harmonic_T = librosa.istft(stft_FxT * _harmonic_mask(np.abs(stft_FxT)), n_fft=cfg.n_fft,
                             hop_length=cfg.hop_length, length=len(y_T))
  return librosa.feature.tonnetz(y=harmonic_T, sr=cfg.sample_rate, hop_length=cfg.hop_length)


def _harmonic_mask(mag_FxT: np.ndarray) -> np.ndarray:
  """librosa.decompose.hpss's soft harmonic mask (margin 1, power 2), same values."""
  harm_FxT = _median_rows(mag_FxT)
  perc_FxT = _median_rows(mag_FxT.T).T
  return librosa.util.softmask(harm_FxT, perc_FxT, power=2, split_zeros=True)


def _median_rows(x_RxN: np.ndarray) -> np.ndarray:
  """scipy.ndimage.median_filter(x_RxN, size=(1, 31), mode='reflect'), ~10x faster.

  scipy has a fast path for 1-D input only (the 2-D call dominates the recipe's cost),
  so the rows are padded as mode='reflect' would pad them and filtered as one long 1-D
  signal; the padding is as wide as the kernel's reach, so rows do not mix.
  """
  reach = _HPSS_KERNEL // 2
  padded_RxP = np.pad(x_RxN, ((0, 0), (reach, reach)), mode="symmetric")
  filtered_RxP = scipy.ndimage.median_filter(padded_RxP.ravel(), size=_HPSS_KERNEL)
  return filtered_RxP.reshape(padded_RxP.shape)[:, reach:-reach]


def song_descriptors(path: str | os.PathLike, cfg: DescriptorConfig) -> np.ndarray:
  """S x 193 float32: row s is `descriptor` of `segment(load_audio(path, ...), cfg)[s]`.

  Raises AudioError (see `load_audio` and `segment`; also 'silent' when the kept
  segments are below cfg.silence_dbfs, 'non-finite' for NaN/Inf features).
  """
  segments_SxN = segment(load_audio(path, cfg.sample_rate), cfg)
  rms_dbfs = 10 * np.log10(np.mean(np.square(segments_SxN, dtype=np.float64)) + 1e-20)
  if rms_dbfs < cfg.silence_dbfs:
    raise AudioError("silent", f"{path} is near-silent (RMS {rms_dbfs:.0f} dBFS, below "
                     f"silence_dbfs={cfg.silence_dbfs}); check the file or lower "
                     "silence_dbfs.")
  desc_Sx193 = np.stack([descriptor(segment_N, cfg) for segment_N in segments_SxN])
  if not np.isfinite(desc_Sx193).all():
    raise AudioError("non-finite", f"{path} gives NaN/Inf features; inspect the audio "
                     "and report it if it plays normally.")
  return desc_Sx193
