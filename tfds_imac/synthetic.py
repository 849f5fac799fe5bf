"""Generator of a small synthetic IMAC corpus in the real manual-dir layout.

`imac/synthetic` writes one with `write_corpus_once` and then builds it with the same
code as the real corpus, so the whole path from raw media to features runs without a
download. Every item has a hidden cue class that decides how it looks or sounds:

  images  hue, brightness, saturation and texture (smooth / banded / jagged)
  music   mode (major / suspended / minor), tempo, register, loudness, brightness

An item's label (its emotion folder, or its song's scores) equals its cue class except
for a `label_noise` fraction of items that get another class, so the best achievable
correspondence accuracy is known. The cue classes go to `cues.csv`:

  <root>/images/<emotion>/<name>.jpg
  <root>/music/<song_id>.wav|flac
  <root>/music.csv   song_id,artist,title,pos_score,neu_score,neg_score
  <root>/cues.csv    modality,item_id,cue
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import os
import tempfile

from etils import epath
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
import soundfile as sf

from acp_jax import labels
from tfds_imac.imac import corpus

MARKER = "synthetic_corpus.json"  # names a directory as a generated corpus
CUES_COLUMNS = ("modality", "item_id", "cue")

_NUM_CLASSES = len(labels.CLASSES)
_CLASS_EMOTIONS = tuple(tuple(e for e in labels.EMOTIONS if labels.EMOTION_TO_CLASS[e] == c)
                        for c in range(_NUM_CLASSES))


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """Size and difficulty of a synthetic corpus; one config always gives the same bytes."""
  num_images: int = 480
  # One 6 s segment per song in the `imac/synthetic` builder config: as many distinct
  # songs as the build time allows, since segments of one song share its cue.
  num_songs: int = 192
  song_seconds: float = 6.5
  label_noise: float = 0.1     # fraction of items whose label is not their cue class
  # How much of its cue class an item shows: below 1, every range of its look or sound
  # moves toward the mean over classes by 1 - cue_strength, and its shape or chord comes
  # from a random class with probability 1 - cue_strength.
  cue_strength: float = 1.0
  sample_rate: int = 22050     # of most songs; every 7th is 44.1 kHz stereo instead
  seed: int = 0

  def __post_init__(self):
    if self.num_images < _NUM_CLASSES or self.num_songs < _NUM_CLASSES:
      raise ValueError(f"A synthetic corpus needs at least {_NUM_CLASSES} images and songs "
                       f"(one per class), got num_images={self.num_images}, "
                       f"num_songs={self.num_songs}.")
    if not 0.0 < self.cue_strength <= 1.0:
      raise ValueError(f"cue_strength is in (0, 1]; got {self.cue_strength}.")
    if not 0.0 <= self.label_noise <= 1.0:
      raise ValueError(f"label_noise is a fraction of items, in [0, 1]; got {self.label_noise}.")
    if self.song_seconds <= 0 or self.sample_rate < 8000:
      raise ValueError(f"Songs need song_seconds > 0 and sample_rate >= 8000 Hz; got "
                       f"{self.song_seconds} s at {self.sample_rate} Hz.")


def write_corpus(root: epath.PathLike, cfg: CorpusConfig) -> None:
  """Writes the corpus of `cfg` under `root`, replacing a corpus already there.

  Raises:
    ValueError: `root` is a file, or a non-empty directory that holds no corpus
      (only a directory marked by an earlier write_corpus gets its items replaced).
  """
  root = epath.Path(root)
  marker = root / MARKER
  if root.exists() and not root.is_dir():
    raise ValueError(f"{root} is a file; give write_corpus a new or empty directory.")
  if root.exists() and any(root.iterdir()) and not marker.exists():
    raise ValueError(f"{root} is not empty and holds no synthetic corpus (no {MARKER}); "
                     "give write_corpus a new or empty directory so no other files are lost.")
  for folder in (root / "images", root / "music"):
    if folder.exists():
      folder.rmtree()  # items of an earlier config must not survive next to this one's
  root.mkdir(parents=True, exist_ok=True)
  # Written first, so a directory left half-written by a killed run is still ours to redo.
  marker.write_text(json.dumps({"generator": __name__, "config": dataclasses.asdict(cfg)},
                               indent=2) + "\n")

  image_rng, music_rng = (np.random.default_rng((cfg.seed, stream)) for stream in (0, 1))
  image_cues, image_labels = _cues_and_labels(image_rng, cfg.num_images, cfg.label_noise)
  song_cues, song_labels = _cues_and_labels(music_rng, cfg.num_songs, cfg.label_noise)
  tie = music_rng.random(cfg.num_songs) < _TIE_FRACTION
  (root / "music").mkdir(parents=True)
  # Threads suffice: PIL, libsndfile and the large numpy operations release the GIL.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    image_ids = list(pool.map(functools.partial(_write_image, root, cfg),
                              range(cfg.num_images), image_cues, image_labels))
    song_rows = list(pool.map(functools.partial(_write_song, root, cfg),
                              range(cfg.num_songs), song_cues, song_labels, tie))
  cue_rows = [("image", item, int(cue)) for item, cue in zip(image_ids, image_cues)]
  cue_rows += [("music", row[0], int(cue)) for row, cue in zip(song_rows, song_cues)]
  (root / "music.csv").write_text(_csv(corpus.CSV_COLUMNS, song_rows))
  (root / "cues.csv").write_text(_csv(CUES_COLUMNS, cue_rows))


def write_corpus_once(root: epath.Path, cfg: CorpusConfig) -> None:
  """Writes the corpus at `root` unless it is there; no build ever reads a partial one.

  The corpus is written beside `root` and renamed into place, so builds running at once
  (two configs, two test workers) cannot delete each other's files half way.
  """
  if root.exists():
    return
  root.parent.mkdir(parents=True, exist_ok=True)
  partial = epath.Path(tempfile.mkdtemp(dir=root.parent, prefix=f"{root.name}.partial-"))
  write_corpus(partial, cfg)
  try:
    partial.rename(root)
  except OSError:  # another build renamed its corpus first: the same bytes, keep that one
    partial.rmtree()


def _write_image(root: epath.Path, cfg: CorpusConfig, i: int, cue: int, label: int) -> str:
  """Writes image `i` into its label's emotion folder and returns its item id."""
  rng = np.random.default_rng((cfg.seed, 0, i))  # one stream per item: any order, same bytes
  item_id = f"{rng.choice(_CLASS_EMOTIONS[label])}/img_{i:05d}.jpg"
  path = root / "images" / item_id
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(_encode_jpeg(_image(rng, _weakened(_LOOKS, cue, cfg.cue_strength, rng))))
  return item_id


def _write_song(root: epath.Path, cfg: CorpusConfig, i: int, cue: int, label: int, tie: bool
                ) -> tuple[str, ...]:
  """Writes song `i` and returns its music.csv row."""
  rng = np.random.default_rng((cfg.seed, 1, i))
  song_id = f"song_{i:04d}"
  # A few songs in the other formats of a real collection: FLAC, 44.1 kHz stereo.
  fmt = "flac" if i % 5 == 4 else "wav"
  stereo = i % 7 == 3
  rate = 44100 if stereo else cfg.sample_rate
  audio = _song(rng, _weakened(_STYLES, cue, cfg.cue_strength, rng), cfg.song_seconds, rate)
  if stereo:
    pan = rng.uniform(-0.2, 0.2)
    audio = audio[:, None] * (np.array([1 - pan, 1 + pan], np.float32) / (1 + abs(pan)))
  (root / "music" / f"{song_id}.{fmt}").write_bytes(_encode_audio(audio, rate, fmt))
  scores = _scores(rng, int(label), bool(tie))
  return (song_id, f"Synthetic Artist {i % 12:02d}", f"Study no. {i}",
          *(f"{s / 1000:.3f}" for s in scores))


def _cues_and_labels(rng: np.random.Generator, n: int, noise: float
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Balanced cue classes; exactly round(noise * n) labels moved to another class."""
  cues_N = rng.permutation(np.arange(n) % _NUM_CLASSES)
  labels_N = cues_N.copy()
  flip = rng.choice(n, int(round(noise * n)), replace=False)
  labels_N[flip] = (cues_N[flip] + rng.integers(1, _NUM_CLASSES, flip.size)) % _NUM_CLASSES
  return cues_N, labels_N


_DISCRETE_CUES = ("shape", "chord")  # fields of _Look / _Style that cannot be averaged


def _weakened(specs: Sequence, cue: int, strength: float, rng: np.random.Generator):
  """`specs[cue]` with its cue weakened by `strength` (see CorpusConfig.cue_strength)."""
  spec = specs[cue]
  if strength == 1.0:
    return spec  # no draws: full-strength corpora keep their bytes
  changes = {}
  for field in dataclasses.fields(spec):
    if field.name in _DISCRETE_CUES:
      if rng.random() > strength:
        changes[field.name] = getattr(specs[rng.integers(len(specs))], field.name)
      continue
    value = getattr(spec, field.name)
    mean = np.mean([getattr(s, field.name) for s in specs], axis=0)
    blended = strength * np.asarray(value, np.float64) + (1 - strength) * mean
    if isinstance(np.ravel(value)[0], (int, np.integer)):
      blended = np.round(blended).astype(int)
    changes[field.name] = tuple(blended.tolist()) if isinstance(value, tuple) else blended.item()
  return dataclasses.replace(spec, **changes)


def _csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  return buf.getvalue()


# ---------------------------------------------------------------------------- images

_IMAGE_SIDES = (160, 192, 224, 256, 288, 320)  # width and height drawn independently


def _discs(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  cx, cy = rng.uniform(0, w), rng.uniform(0, h)
  rx, ry = rng.uniform(0.08, 0.3, 2) * min(w, h)
  draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)


def _bands(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  x0, x1 = np.sort(rng.uniform(0, w, 2))
  y0, y1 = np.sort(rng.uniform(0, h, 2))
  kind = rng.integers(3)  # a full-width band, a full-height band or a block
  if kind == 0:
    x0, x1 = 0, w
  elif kind == 1:
    y0, y1 = 0, h
  draw.rectangle((x0, y0, x1, y1), fill=255)


def _strokes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
  points = rng.uniform((0, 0), (w, h), (rng.integers(4, 9), 2))
  if rng.random() < 0.5:
    draw.line([tuple(p) for p in points], fill=255, width=int(rng.integers(3, 11)))
  else:  # a spiky star: radii alternate long and short
    n = 2 * int(rng.integers(4, 8))
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
    radius = rng.uniform(0.1, 0.3) * min(w, h) * np.where(np.arange(n) % 2, 0.35, 1.0)
    centre = rng.uniform((0, 0), (w, h))
    draw.polygon([tuple(centre + r * np.array([np.cos(a), np.sin(a)]))
                  for a, r in zip(angle, radius)], fill=255)


@dataclasses.dataclass(frozen=True)
class _Look:
  """How the images of one cue class look; ranges are drawn per image (PIL HSV in 0..1)."""
  hue: tuple[float, float]
  saturation: tuple[float, float]
  value: tuple[float, float]
  blur: tuple[float, float]   # shape edge softness, px
  grain: tuple[int, int]      # side of a brightness-noise cell, px: large is smooth
  noise: tuple[float, float]  # brightness-noise amplitude
  shape: Callable[[ImageDraw.ImageDraw, np.random.Generator, int, int], None]


_LOOKS = (  # indexed by cue class
    # positive: warm (yellow-orange), bright, vivid, smooth
    _Look(hue=(0.06, 0.15), saturation=(0.65, 0.95), value=(0.75, 0.95), blur=(3.0, 7.0),
          grain=(24, 64), noise=(0.02, 0.06), shape=_discs),
    # neutral: green/teal, muted, banded
    _Look(hue=(0.36, 0.50), saturation=(0.35, 0.60), value=(0.50, 0.72), blur=(1.5, 3.0),
          grain=(4, 12), noise=(0.03, 0.09), shape=_bands),
    # negative: blue/purple, dark, jagged
    _Look(hue=(0.64, 0.80), saturation=(0.30, 0.60), value=(0.18, 0.42), blur=(0.0, 0.0),
          grain=(1, 3), noise=(0.06, 0.16), shape=_strokes),
)
_OFF_HUE_SHAPES = 0.15  # fraction of shapes in a random hue, so colour is not the only cue


def _image(rng: np.random.Generator, look: _Look) -> Image.Image:
  """An RGB image: a gradient, a few shapes and brightness noise, all in the look's ranges."""
  w, h = (int(s) for s in rng.choice(_IMAGE_SIDES, 2))
  lo, hi = np.array([look.hue, look.saturation, look.value]).T
  base_3 = rng.uniform(lo, hi)
  angle = rng.uniform(0, 2 * np.pi)
  ramp_HxW = (np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * np.sin(angle)
              + np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.cos(angle))
  slope_3 = rng.uniform(-1, 1, 3) * (hi - lo)
  canvas = _hsv_image(base_3[:, None, None] + slope_3[:, None, None] * ramp_HxW)

  for _ in range(rng.integers(3, 8)):
    mask = Image.new("L", (w, h))
    look.shape(ImageDraw.Draw(mask), rng, w, h)
    colour_3 = np.clip(base_3 + rng.uniform(-1, 1, 3) * (hi - lo), 0, 1)
    if rng.random() < _OFF_HUE_SHAPES:
      colour_3[0] = rng.random()
    fill = Image.new("HSV", (w, h), tuple(int(round(c * 255)) for c in colour_3))
    canvas = Image.composite(fill, canvas, mask)

  rgb = canvas.convert("RGB")
  if look.blur[1] > 0:  # soft edges everywhere; a hard-edged look skips the blur
    rgb = rgb.filter(ImageFilter.GaussianBlur(rng.uniform(*look.blur)))
  grain = int(rng.integers(look.grain[0], look.grain[1] + 1))
  cells = rng.standard_normal((h // grain + 2, w // grain + 2)).astype(np.float32)
  noise_HxW = np.asarray(Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC))
  # Scaling R, G and B together moves brightness (V) alone, keeping hue and saturation.
  gain_HxWx1 = (1 + rng.uniform(*look.noise) / base_3[2] * noise_HxW)[..., None]
  return Image.fromarray(np.clip(np.asarray(rgb) * gain_HxWx1, 0, 255).round().astype(np.uint8))


def _hsv_image(hsv_3xHxW: np.ndarray) -> Image.Image:
  bands = [Image.fromarray(np.round(np.clip(c, 0, 1) * 255).astype(np.uint8)) for c in hsv_3xHxW]
  return Image.merge("HSV", bands)


def _encode_jpeg(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=90)
  return buf.getvalue()


# ----------------------------------------------------------------------------- music

_TABLE_SIZE = 4096       # samples in one period of a timbre's wavetable
_TIE_FRACTION = 0.1      # songs whose top score is tied with a less positive class
_RELEASE = 0.01          # s, fade at the end of every note
_SNR_DB = (35.0, 45.0)   # of the white noise under the music; more would mask the brightness


@dataclasses.dataclass(frozen=True)
class _Style:
  """How the songs of one cue class sound; ranges are drawn per song."""
  chord: tuple[int, int, int]            # triad intervals, semitones: the mode
  notes_per_second: tuple[float, float]  # arpeggio onset rate: the tempo
  key: tuple[int, int]                   # MIDI note of the tonic: the register
  loudness: tuple[float, float]          # peak amplitude
  harmonics: tuple[int, int]             # partials of the timbre: the brightness
  rolloff: float                         # partial k has amplitude k**-rolloff
  decay: tuple[float, float]             # note decay time constant, s


_STYLES = (  # indexed by cue class; neighbouring classes overlap a little on each cue
    # positive: major, fast, high, loud, bright, staccato
    _Style(chord=(0, 4, 7), notes_per_second=(4.0, 7.0), key=(58, 67),
           loudness=(0.45, 0.9), harmonics=(7, 10), rolloff=1.0, decay=(0.12, 0.25)),
    # neutral: suspended (neither major nor minor), in between on the rest
    _Style(chord=(0, 2, 7), notes_per_second=(2.2, 4.2), key=(50, 60),
           loudness=(0.25, 0.55), harmonics=(4, 6), rolloff=1.5, decay=(0.3, 0.5)),
    # negative: minor, slow, low, quiet, dark, sustained
    _Style(chord=(0, 3, 7), notes_per_second=(1.0, 2.6), key=(41, 52),
           loudness=(0.1, 0.3), harmonics=(2, 4), rolloff=2.0, decay=(0.6, 1.0)),
)
# Chords on the tonic, subdominant and dominant, all of the style's quality.
_PROGRESSION = (0, 5, 7)
_ARPEGGIO_SPAN = 12  # the arpeggio climbs the triad and then its octave


def _hz(midi: np.ndarray | int) -> np.ndarray:
  return 440.0 * 2.0 ** ((np.asarray(midi, np.float64) - 69) / 12)


def _notes(table_L: np.ndarray, hz_M: np.ndarray, length: int, attack: float, decay: float,
           sr: int) -> np.ndarray:
  """M consecutive wavetable notes of `length` samples each, as one `M * length` signal."""
  since_onset_L = np.arange(length, dtype=np.float32) / sr
  index_MxL = (hz_M[:, None].astype(np.float32) * (since_onset_L * _TABLE_SIZE)).astype(np.int32)
  until_end_L = since_onset_L[::-1]
  env_L = (np.minimum(since_onset_L / attack, 1.0) * np.exp(-since_onset_L / decay)
           * np.minimum(until_end_L / _RELEASE, 1.0))  # a note cut short would click
  return (table_L[index_MxL & (_TABLE_SIZE - 1)] * env_L).ravel()


def _song(rng: np.random.Generator, style: _Style, seconds: float, sr: int) -> np.ndarray:
  """Mono float32 audio: an arpeggio over a sustained chord progression, plus noise."""
  n = int(round(seconds * sr))
  # Whole samples per note let every note be a row of one matrix.
  note_len = int(round(sr / rng.uniform(*style.notes_per_second)))
  notes_per_chord = int(rng.choice((4, 8)))
  num_chords = -(-n // (note_len * notes_per_chord))
  key = int(rng.integers(style.key[0], style.key[1] + 1))
  roots_C = key + rng.choice(_PROGRESSION, num_chords)
  roots_C[0] = key

  highest = key + max(_PROGRESSION) + _ARPEGGIO_SPAN
  partials = min(int(rng.integers(style.harmonics[0], style.harmonics[1] + 1)),
                 max(1, int(0.45 * sr / _hz(highest))))  # no partial above Nyquist
  k_H = np.arange(1, partials + 1)
  amp_H = k_H ** -style.rolloff * rng.uniform(0.8, 1.2, partials)
  phase_Hx1 = rng.uniform(0, 2 * np.pi, (partials, 1))
  cycle_L = np.arange(_TABLE_SIZE) / _TABLE_SIZE
  table_L = amp_H @ np.sin(2 * np.pi * k_H[:, None] * cycle_L + phase_Hx1)
  table_L = (table_L / np.abs(table_L).max()).astype(np.float32)

  # Arpeggio: one note at a time, with a per-note velocity.
  tones = np.array(style.chord + (_ARPEGGIO_SPAN,))
  pattern = tones if rng.random() < 0.5 else rng.permutation(tones)
  note_M = np.arange(num_chords * notes_per_chord)
  hz_M = _hz(roots_C[note_M // notes_per_chord] + pattern[note_M % len(pattern)])
  velocity_M = rng.uniform(0.7, 1.0, note_M.size).astype(np.float32)
  decay = rng.uniform(*style.decay)
  arpeggio_N = _notes(table_L, hz_M, note_len, 0.005, decay, sr) * np.repeat(velocity_M, note_len)
  # Pad: the whole triad, held for each chord.
  pad_N = sum(_notes(table_L, _hz(roots_C + interval), note_len * notes_per_chord, 0.05,
                     4 * decay, sr) for interval in style.chord)

  mix_N = (arpeggio_N + 0.3 * pad_N)[:n]
  snr_db = rng.uniform(*_SNR_DB)
  mix_N += rng.standard_normal(n, np.float32) * np.sqrt(np.mean(mix_N**2)) * 10 ** (-snr_db / 20)
  return (mix_N * (rng.uniform(*style.loudness) / np.abs(mix_N).max())).astype(np.float32)


def _encode_audio(audio: np.ndarray, sr: int, fmt: str) -> bytes:
  buf = io.BytesIO()
  sf.write(buf, audio, sr, format=fmt.upper(), subtype="PCM_16")
  return buf.getvalue()


def _scores(rng: np.random.Generator, label: int, tie: bool) -> tuple[int, int, int]:
  """(positive, neutral, negative) scores in thousandths summing to 1000, top = label.

  A tie partners the label with a less positive class, so the paper's tie rule
  (`labels.song_class`) still gives the label; the most negative class never ties.
  """
  scores = [0] * _NUM_CLASSES
  others = [c for c in range(_NUM_CLASSES) if c != label]
  if tie and label < _NUM_CLASSES - 1:
    top = int(rng.integers(340, 501))  # >= 334 keeps the remainder below the tie
    partner = int(rng.choice([c for c in others if c > label]))
    scores[label] = scores[partner] = top
    scores[next(c for c in others if c != partner)] = 1000 - 2 * top
  else:
    top = int(rng.integers(400, 801))
    rest = 1000 - top
    first = int(rng.integers(max(0, rest - top + 1), min(rest, top - 1) + 1))  # both < top
    scores[label], scores[others[0]], scores[others[1]] = top, first, rest - first
  return tuple(scores)
