"""Reads an IMAC manual-dir into item records, counting every item it must skip.

The layout (see `MANUAL_DOWNLOAD_INSTRUCTIONS`):
  images/<emotion>/<name>.<ext>   music/<song_id>.<ext>   music.csv   [cues.csv]
The records: an `Image`, a `Song`, and a `Segment` (a song's music item). Nothing here
decodes media: that happens in the build engines, which report their own skips through
the same `SkipLog`.
"""

import collections
import csv
import dataclasses
import math

from etils import epath

from acp_jax import labels

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac"})
CSV_COLUMNS = ("song_id", "artist", "title", "pos_score", "neu_score", "neg_score")


@dataclasses.dataclass(frozen=True)
class Image:
  id: str          # "<emotion>/<file name with extension>": unique, `a.jpg` and `a.png` are two
  path: epath.Path
  emotion: int     # index into labels.EMOTIONS
  label: int       # index into labels.CLASSES
  cue: int         # hidden cue class of a synthetic item, -1 when unknown


@dataclasses.dataclass(frozen=True)
class Song:
  id: str
  path: epath.Path
  label: int
  cue: int


@dataclasses.dataclass(frozen=True)
class Segment:
  """One music item: segment `index` of `song`."""
  id: str          # "<song_id>#<index:03d>"
  song: Song
  index: int


def song_segments(song: Song, count: int) -> list[Segment]:
  return [Segment(f"{song.id}#{k:03d}", song, k) for k in range(count)]


def image_file(image: Image) -> str:
  """How the skip log names an image file: `<emotion folder>/<file name>`."""
  return f"{image.path.parent.name}/{image.path.name}"


class SkipLog:
  """Skipped items with their reasons; a build reports and stores it."""

  def __init__(self):
    self.items: list[tuple[str, str, str]] = []  # (modality, item, reason)

  def skip(self, modality: str, item: str, reason: str) -> None:
    self.items.append((modality, item, reason))

  def counts(self) -> dict[str, int]:
    return dict(sorted(collections.Counter(f"{m}: {r}" for m, _, r in self.items).items()))

  def summary(self) -> str:
    if not self.items:
      return "IMAC build: no item skipped."
    lines = [f"IMAC build: {len(self.items)} item(s) skipped:"]
    lines += [f"  {n:6d}  {reason}" for reason, n in self.counts().items()]
    return "\n".join(lines)


def read_cues(root: epath.Path) -> dict[tuple[str, str], int]:
  """Hidden cue classes written by the synthetic generator; empty for real data."""
  path = root / "cues.csv"
  if not path.exists():
    return {}
  with path.open() as f:
    return {(row["modality"], row["item_id"]): int(row["cue"]) for row in csv.DictReader(f)}


def scan_images(root: epath.Path, cues: dict, log: SkipLog) -> list[Image]:
  """Images under `root/images/<emotion>/`, sorted by id (`<emotion>/<file name>`)."""
  images_dir = root / "images"
  if not images_dir.is_dir():
    raise FileNotFoundError(f"{images_dir} is missing: put the Image Emotion folders there "
                            "(images/<emotion>/<name>.jpg), see the IMAC manual-download "
                            "instructions.")
  found: dict[str, Image] = {}
  for folder in sorted(images_dir.iterdir()):
    if not folder.is_dir():
      log.skip("image", folder.name, "file outside an emotion folder")
      continue
    emotion = folder.name.lower()
    if emotion not in labels.EMOTION_TO_CLASS:
      for path in sorted(folder.iterdir()):
        log.skip("image", f"{folder.name}/{path.name}", "unknown emotion folder")
      continue
    for path in sorted(folder.iterdir()):
      item = f"{emotion}/{path.name}"
      if path.suffix.lower() not in IMAGE_EXTENSIONS:
        log.skip("image", f"{folder.name}/{path.name}", "not an image file")
      elif item in found:  # emotion folders whose names differ only in case: Awe/, awe/
        log.skip("image", f"{folder.name}/{path.name}", "duplicate image id")
      else:
        found[item] = Image(item, path, labels.EMOTIONS.index(emotion),
                            labels.EMOTION_TO_CLASS[emotion], cues.get(("image", item), -1))
  return [found[k] for k in sorted(found)]


def _parse_scores(row: dict) -> tuple[float, float, float] | None:
  try:
    scores = tuple(float(row[c]) for c in CSV_COLUMNS[3:])
  except (TypeError, ValueError):
    return None
  if any(not math.isfinite(s) or s < 0 for s in scores):
    return None
  return scores


def scan_songs(root: epath.Path, cues: dict, log: SkipLog) -> list[Song]:
  """Songs that have both a valid `music.csv` row and an audio file, sorted by id."""
  csv_path, music_dir = root / "music.csv", root / "music"
  for path in (csv_path, music_dir):
    if not path.exists():
      raise FileNotFoundError(f"{path} is missing: see the IMAC manual-download instructions "
                              "(music.csv with song_id,artist,title,pos_score,neu_score,neg_score; "
                              "music/<song_id>.wav|flac|mp3|ogg|m4a|aac).")
  song_labels: dict[str, int] = {}
  with csv_path.open() as f:
    reader = csv.DictReader(f)
    missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}; "
                       f"the header must be: {','.join(CSV_COLUMNS)}")
    for line, row in enumerate(reader, start=2):
      song = (row.get("song_id") or "").strip()
      scores = _parse_scores(row)
      if not song or scores is None or None in row.values() or None in row:
        log.skip("music", f"music.csv line {line}", "malformed csv row")
      elif song in song_labels:
        log.skip("music", song, "duplicate song id in music.csv")
      else:
        song_labels[song] = labels.song_class(scores)

  audio: dict[str, epath.Path] = {}
  for path in sorted(music_dir.iterdir()):
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
      log.skip("music", path.name, "not an audio file")
    elif path.stem in audio:
      log.skip("music", path.name, "duplicate audio file for one song id")
    elif path.stem not in song_labels:
      log.skip("music", path.name, "audio file without a music.csv row")
    else:
      audio[path.stem] = path
  for song in sorted(set(song_labels) - set(audio)):
    log.skip("music", song, "music.csv row without an audio file")
  return [Song(s, audio[s], song_labels[s], cues.get(("music", s), -1)) for s in sorted(audio)]
