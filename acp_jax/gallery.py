"""The report's listening gallery: queries, the items the model ranks first for each, and
their media, so that a reader can hear the music and see the images.

A query is a music segment or an image; its matches are the items of the other
modality ranked by the model's score. `Gallery` writes the medium of each item it
shows once into the report's folder (`DIR`), so that the folder is self-contained:
an image as a small JPEG, a segment as its first `clip_seconds` in Opus at `clip_kbps`
(Ogg; PyAV's wheels carry libopus). It reads them from a media config's records, else
from the raw corpus: the manual dir given, or the generated corpus of a synthetic
config (`images/<id>`, `music/<song_id>.<ext>` cut at the segment's offset). An item
it cannot read gets a note instead of a file; a modality with no media at hand, one
note for the page.

The gallery is plain data, results.json's `gallery`, which acp_jax/report.py lays out:

  {"notes": {"music": "why nothing plays", ...},
   "music_to_image": [query, ...], "image_to_music": [query, ...]}
  query: an item, with "matches": [an item with "score" and "match", ...]
  item:  {"id", "class", "emotion" (images of a dataset with emotions),
          "file": path relative to the report's folder, or None,
          "note": why there is no file, or None}

"match" is true when a match's class is its query's (None: a query of unknown class).
"""

from collections.abc import Callable, Mapping
import functools
import shutil
from typing import Any

import av
from etils import epath
import ml_collections
import numpy as np
from PIL import Image

from acp_jax import items
from acp_jax import labels
from acp_jax.features import media
from acp_jax.features import music
from tfds_imac.imac import corpus

DIR = "gallery"  # under the report's folder
THUMBNAIL = 160  # pixels per side of a gallery image
SAMPLE_RATE = music.DescriptorConfig.sample_rate  # the datasets' waveforms (the builder's)
_OPUS_RATE = 48_000  # the rate Opus encodes at
_SUFFIX = {"image": ".jpg", "music": ".ogg"}
_OTHER = {"image": "music", "music": "image"}
_SET_MANUAL_DIR = ("Set media.manual_dir (--config.evals.figures.media.manual_dir; the retrieve "
                   "job's --config.media.manual_dir) to the IMAC manual dir")

Reader = Callable[[int], np.ndarray]  # item index -> pixels or waveform; raises Unavailable


class Unavailable(Exception):
  """An item's medium that cannot be read; the message is the note in its cell."""


def pick_queries(labels_N: np.ndarray, per_class: int,
                 groups_N: np.ndarray | None = None) -> np.ndarray:
  """Sorted indices of the first `per_class` items of each class; with `groups_N` (the
  segments' songs), only the first item of a group, so that the queries differ."""
  labels_N = np.asarray(labels_N)
  first = (np.arange(len(labels_N)) if groups_N is None
           else np.sort(np.unique(groups_N, return_index=True)[1]))
  return np.sort(np.concatenate([first[labels_N[first] == c][:per_class]
                                 for c in range(len(labels.CLASSES))]))


def write_thumbnail(pixels_HxWx3: np.ndarray, path: epath.Path) -> None:
  """At most THUMBNAIL pixels a side, as JPEG."""
  image = Image.fromarray(np.asarray(pixels_HxWx3, np.uint8))
  image.thumbnail((THUMBNAIL, THUMBNAIL))
  image.save(path, "JPEG", quality=85)


def write_clip(wave_T: np.ndarray, path: epath.Path, kbps: int) -> None:
  """Mono float32 samples at SAMPLE_RATE as Opus in Ogg at `kbps`."""
  with av.open(str(path), "w", format="ogg") as out:
    # Constrained VBR: the clip's size stays at its bit rate (unconstrained VBR spent a
    # third more on a pure tone).
    stream = out.add_stream("libopus", rate=_OPUS_RATE, layout="mono",
                            options={"vbr": "constrained"})
    stream.bit_rate = 1000 * kbps
    frame = av.AudioFrame.from_ndarray(np.asarray(wave_T, np.float32)[None], format="flt",
                                       layout="mono")
    frame.sample_rate = SAMPLE_RATE
    resampler = av.AudioResampler(format="flt", layout="mono", rate=_OPUS_RATE)
    for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
      out.mux(stream.encode(resampled))
    out.mux(stream.encode(None))


def _image_reader(images: items.Items, root: epath.Path | None) -> tuple[Reader | None, str]:
  """(read, '') or (None, why no image can be shown)."""
  if images.source is not None:
    return lambda i: images.source[i]["pixels"], ""
  if root is None:
    return None, ("No image files at hand: the dataset holds the images' features only. "
                  f"{_SET_MANUAL_DIR} (images/<emotion>/<name>.<ext>) to see them.")

  def read(i: int) -> np.ndarray:
    pixels, reason = media.load_image(root / "images" / images.ids[i], THUMBNAIL, 1)
    if pixels is None:
      raise Unavailable(f"images/{images.ids[i]}: {reason}")
    return pixels
  return read, ""


def _clip_reader(segments: items.Items, root: epath.Path | None, segment_seconds: float | None,
                 clip_seconds: float) -> tuple[Reader | None, str]:
  """(read, '') or (None, why no segment can be played): a reader of each segment's first
  `clip_seconds` at most, float32 at SAMPLE_RATE."""
  clip = round(clip_seconds * SAMPLE_RATE)
  if segments.source is not None:
    return lambda m: segments.source[m]["waveform"][:clip].astype(np.float32) / 32768, ""
  music_dir = None if root is None else root / "music"
  if music_dir is None or segment_seconds is None or not music_dir.is_dir():
    return None, ("No audio at hand: the dataset holds the segments' features only"
                  + (f" and {music_dir} is not a folder" if music_dir else "")
                  + f". {_SET_MANUAL_DIR} (music/<song_id>.<ext>) to hear them.")
  songs = {path.stem: path for path in music_dir.iterdir()
           if path.suffix.lower() in corpus.AUDIO_EXTENSIONS}
  # Neighbouring queries and matches are often segments of one song: decode it once.
  decode = functools.lru_cache(maxsize=2)(lambda path: music.load_audio(path, SAMPLE_RATE))
  segment = round(segment_seconds * SAMPLE_RATE)  # as music.segment cuts
  clip = min(clip, segment)

  def read(m: int) -> np.ndarray:
    song, _, index = segments.ids[m].rpartition("#")
    if song not in songs or not index.isdigit():
      raise Unavailable(f"no song file music/{song}.<ext> in {root}")
    try:
      wave_T = decode(songs[song])
    except music.AudioError as e:
      raise Unavailable(f"music/{songs[song].name}: {e}") from e
    start = int(index) * segment
    if start >= len(wave_T):
      raise Unavailable(f"music/{songs[song].name} ends before segment {index}")
    return wave_T[start:start + clip]
  return read, ""


class Gallery:
  """The items of some splits as the gallery shows them, each item's medium written once
  under `report_dir/DIR` (emptied first).

  `settings`: `manual_dir` (None: the splits' own media or corpus), `clip_seconds`,
  `clip_kbps` (configs/acp.py: media_config).
  """

  def __init__(self, splits: Mapping[str, items.Split], report_dir: epath.PathLike,
               settings: ml_collections.ConfigDict):
    self._splits, self._report_dir = splits, epath.Path(report_dir)
    self._dir = self._report_dir / DIR
    shutil.rmtree(self._dir, ignore_errors=True)
    self._dir.mkdir(parents=True)
    self._kbps, self._clip_seconds = settings.clip_kbps, settings.clip_seconds
    self._readers, self.notes = {}, {}
    for name, split in splits.items():
      root = epath.Path(settings.manual_dir) if settings.manual_dir else split.corpus_root
      for modality, (read, note) in (
          ("image", _image_reader(split.images, root)),
          ("music", _clip_reader(split.music, root, split.segment_seconds, self._clip_seconds))):
        self._readers[name, modality] = read
        if note:
          self.notes[modality] = note
    self._written: dict[str, dict[str, str | None]] = {}

  def _medium(self, name: str, modality: str, read: Callable[[], np.ndarray] | None
              ) -> dict[str, str | None]:
    """{'file', 'note'} of a medium, written as `DIR/<name><suffix>` on the first call;
    without `read`, neither (the page's note on the modality says why)."""
    if read is None:
      return {"file": None, "note": None}
    if name not in self._written:
      path = self._dir / (name + _SUFFIX[modality])
      try:
        if modality == "image":
          write_thumbnail(read(), path)
        else:
          write_clip(read(), path, self._kbps)
        self._written[name] = {"file": path.relative_to(self._report_dir).as_posix(),
                               "note": None}
      except Unavailable as e:
        self._written[name] = {"file": None, "note": str(e)}
    return self._written[name]

  def item(self, split: str, modality: str, i: int) -> dict[str, Any]:
    """Item i of a split's images or music segments, its medium written."""
    side = self._splits[split].images if modality == "image" else self._splits[split].music
    entry = {"id": side.ids[i], "class": labels.CLASSES[side.labels_N[i]]}
    if side.emotions_N is not None:
      entry["emotion"] = labels.EMOTIONS[side.emotions_N[i]]
    read = self._readers[split, modality]
    return {**entry, **self._medium(f"{modality}_{split}_{i:05d}", modality,
                                    read and functools.partial(read, i))}

  def query_file(self, path: epath.PathLike, modality: str) -> dict[str, Any]:
    """A query by file (the retrieve job): its name and medium, of unknown class."""
    path = epath.Path(path)

    def read() -> np.ndarray:
      if modality == "image":
        pixels, reason = media.load_image(path, THUMBNAIL, 1)
        if pixels is None:
          raise Unavailable(reason)
        return pixels
      try:
        return music.load_audio(path, SAMPLE_RATE)[:round(self._clip_seconds * SAMPLE_RATE)]
      except music.AudioError as e:
        raise Unavailable(str(e)) from e
    return {"id": path.name, "class": None, **self._medium("query", modality, read)}

  def rank(self, split: str, modality: str, query_Q: np.ndarray, score_QxK: np.ndarray,
           top_k: int) -> list[dict[str, Any]]:
    """Queries `query_Q` (indices of the split's `modality`) with their top-k items of the
    other modality by `score_QxK`, marked by class; ties rank by index, as in
    acp_jax/retrieval.py."""
    rows = []
    for q, score_K in zip(query_Q, np.asarray(score_QxK, np.float32)):
      query, matches = self.item(split, modality, int(q)), []
      for k in np.argsort(-score_K, kind="stable")[:top_k]:
        match = self.item(split, _OTHER[modality], int(k))
        matches.append({**match, "score": float(score_K[k]),
                        "match": match["class"] == query["class"]})
      rows.append({**query, "matches": matches})
    return rows
