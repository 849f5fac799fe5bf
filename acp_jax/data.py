"""IMAC splits as host-side item tables plus the fixed correspondence pairs.

The TFDS examples are pairs that carry both items' features; training wants the
items once each (pairs are sampled on device), and evaluation wants the fixed pairs
as indices into those item tables. `load_splits` turns one into the other. The media
configs (`imac/media`, `imac/synthetic_media`) also give each item its pixels and
waveform, which the builder stores on the item's first pair only.
"""

import dataclasses

import jax
import numpy as np
import tensorflow_datasets as tfds

from acp_jax import MissingInputError
import tfds_imac  # noqa: F401  (registers the imac builder)


@dataclasses.dataclass(frozen=True)
class Items:
  """One modality of one split, one row per distinct item."""
  ids: tuple[str, ...]        # item ids, sorted
  # float32 features; after inputs.prepare, what the model reads (e.g. pixels, spectrograms)
  features_NxD: np.ndarray
  labels_N: np.ndarray        # int32, index into labels.CLASSES
  cues_N: np.ndarray          # int32 hidden cue class (synthetic data), -1 if unknown
  emotions_N: np.ndarray | None = None  # int32 index into labels.EMOTIONS (images)
  pixels_NxHxWx3: np.ndarray | None = None  # uint8 images (media configs)
  waveforms_NxT: np.ndarray | None = None   # int16 segments at 22050 Hz (media configs)


@dataclasses.dataclass(frozen=True)
class Pairs:
  """The fixed correspondence pairs of a split, as indices into its Items."""
  image_P: np.ndarray   # int32
  music_P: np.ndarray   # int32
  labels_P: np.ndarray  # int32, 1 = true correspondence (same class)


@dataclasses.dataclass(frozen=True)
class Split:
  images: Items
  music: Items
  pairs: Pairs
  fingerprint: str | None = None  # the dataset's pair_fingerprint of this split; None: unknown


# Media field of each modality in the media configs.
_MEDIA = {"image": "pixels", "music": "waveform"}


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _items(ids_P: np.ndarray, columns: dict[str, np.ndarray]) -> tuple[Items, np.ndarray]:
  """Distinct items of one modality and, for each pair, the index of its item."""
  ids, first_P, index_P = np.unique(ids_P, return_index=True, return_inverse=True)
  take = lambda key: columns[key][first_P] if key in columns else None
  emotions = take("emotion")
  items = Items(
      ids=tuple(_text(i) for i in ids),
      features_NxD=take("features").astype(np.float32),
      labels_N=take("label").astype(np.int32),
      cues_N=take("cue").astype(np.int32),
      emotions_N=None if emotions is None else emotions.astype(np.int32),
  )
  return items, index_P.astype(np.int32)


def split_from_examples(examples: dict, media: dict[str, dict[str, np.ndarray]] | None = None
                        ) -> Split:
  """A Split from one TFDS split loaded whole as numpy (`batch_size=-1`).

  `media`, from a media config: {'image': {id: pixels}, 'music': {id: waveform}}.
  """
  images, image_P = _items(examples["image"]["id"], examples["image"])
  music, music_P = _items(examples["music"]["id"], examples["music"])
  if media is not None:
    stack = lambda by_id, items: np.stack([by_id[i] for i in items.ids])
    images = dataclasses.replace(images, pixels_NxHxWx3=stack(media["image"], images))
    music = dataclasses.replace(music, waveforms_NxT=stack(media["music"], music))
  return Split(images, music, Pairs(image_P, music_P, examples["label"].astype(np.int32)))


def media_split_from_examples(examples) -> Split:
  """A Split from one media-config TFDS split, iterated as numpy examples.

  The media fields are ragged (empty on all but an item's first pair), so the split
  is read pair by pair: each item keeps its non-empty media, the other fields are
  stacked as `batch_size=-1` would.
  """
  rows, media = [], {modality: {} for modality in _MEDIA}
  for example in examples:
    for modality, field in _MEDIA.items():
      value = example[modality].pop(field)
      if value.size:
        media[modality][_text(example[modality]["id"])] = value
    rows.append(example)
  return split_from_examples(jax.tree.map(lambda *column: np.stack(column), *rows), media)


def not_prepared_message(name: str, data_dir: str | None) -> str:
  return (
      f"The dataset '{name}' is not prepared in {data_dir or '~/tensorflow_datasets'}.\n"
      "Prepare the real IMAC corpus (see tfds_imac/imac/README.md for the manual-dir layout):\n"
      "  tfds build --imports tfds_imac imac/features --manual_dir=/path/to/imac_manual_dir\n"
      "or run the demo on generated data, which needs no download:\n"
      "  python launch.py --config=configs/acp.py:synthetic --workdir=/tmp/acp_synthetic")


def load_splits(name: str, data_dir: str | None = None) -> dict[str, Split]:
  """All splits of an `imac/...` dataset; `imac/synthetic` is built on first use."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if builder.builder_config.synthetic is None:
      raise MissingInputError(not_prepared_message(name, data_dir))
    builder.download_and_prepare()
  if builder.builder_config.media:
    read = lambda split: media_split_from_examples(tfds.as_numpy(builder.as_dataset(split=split)))
  else:
    read = lambda split: split_from_examples(
        tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1)))
  fingerprints = (builder.info.metadata or {}).get("pair_fingerprint", {})
  return {split: dataclasses.replace(read(split), fingerprint=fingerprints.get(split))
          for split in ("train", "validation", "test")}
