"""The imac features (TFDS FeaturesDicts) and the example dicts every build mode writes."""

import numpy as np
import tensorflow_datasets as tfds

from acp_jax import labels
from tfds_imac.imac import corpus


def _pair_item_features(dim: int | None) -> dict:
  return {
      "id": tfds.features.Text(),
      "features": tfds.features.Tensor(shape=(dim,), dtype=np.float32),
      "label": tfds.features.ClassLabel(names=labels.CLASSES),
      "cue": tfds.features.Scalar(dtype=np.int32,
                                  doc="hidden cue class (synthetic), -1 if unknown"),
  }


def pair_features(dims: tuple[int | None, int | None]) -> tfds.features.FeaturesDict:
  """One pair of a features config: both items' features (`dims` wide, None: any width
  the same for every item) and the label."""
  image = _pair_item_features(dims[0])
  image["emotion"] = tfds.features.ClassLabel(names=labels.EMOTIONS)
  song = _pair_item_features(dims[1])
  song["song_id"] = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "image": image, "music": song,
      "label": tfds.features.ClassLabel(names=("false", "true")),
  })


def media_item_features(image_size: int) -> tfds.features.FeaturesDict:
  """One item's record in a media config. Pixels and waveforms are stored as they are:
  ArrayRecord compresses each record itself (zstd), which reads 4x (waveforms) to 9x
  (pixels) faster than TFDS's zlib encoding on top of it. On disk, a generated song's
  waveform took less than half as much; grainy photos' pixels ~7% more. (Pixels keep
  their side fixed: TFDS cannot read back an empty tensor of two unknown dimensions
  stored as bytes.)"""
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "label": tfds.features.ClassLabel(names=labels.CLASSES),
      "cue": tfds.features.Scalar(dtype=np.int32,
                                  doc="hidden cue class (synthetic), -1 if unknown"),
      "emotion": tfds.features.Scalar(dtype=np.int32,
                                      doc="index into the 8 emotions, -1 for music"),
      "song_id": tfds.features.Text(doc="empty for images"),
      "features": tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                       doc="Inception 2048 (images), descriptor 193 (music)"),
      "pixels": tfds.features.Tensor(shape=(None, image_size, 3), dtype=np.uint8,
                                     encoding="bytes",
                                     doc=f"{image_size} rows for images, 0 for music"),
      "waveform": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes",
                                       doc="the segment at 22050 Hz for music, empty for images"),
  })


def pair_example(image: corpus.Image, image_feat: np.ndarray, segment: corpus.Segment,
                 music_feat: np.ndarray, label: int) -> tuple[str, dict]:
  """(key, example) of one pair of a features config; a split holds a pair once."""
  return f"{image.id}|{segment.id}", {
      "image": {"id": image.id, "features": image_feat, "label": image.label,
                "emotion": image.emotion, "cue": image.cue},
      "music": {"id": segment.id, "song_id": segment.song.id, "features": music_feat,
                "label": segment.song.label, "cue": segment.song.cue},
      "label": label,
  }


def image_item_example(image: corpus.Image, feat: np.ndarray, pixels: np.ndarray) -> dict:
  return {"id": image.id, "label": image.label, "cue": image.cue, "emotion": image.emotion,
          "song_id": "", "features": feat, "pixels": pixels,
          "waveform": np.zeros((0,), np.int16)}


def music_item_example(segment: corpus.Segment, feat: np.ndarray, waveform: np.ndarray,
                       image_size: int) -> dict:
  return {"id": segment.id, "label": segment.song.label, "cue": segment.song.cue,
          "emotion": -1, "song_id": segment.song.id, "features": feat,
          "pixels": np.zeros((0, image_size, 3), np.uint8), "waveform": waveform}
