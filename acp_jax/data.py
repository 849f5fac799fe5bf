"""IMAC splits from TFDS: host-side items plus the fixed correspondence pairs (acp_jax/items.py).

The features configs' TFDS examples are pairs that carry both items' features;
training wants the items once each (pairs are sampled on device), and evaluation
wants the fixed pairs as indices into those item tables. `load_splits` turns one into
the other. The media configs (`imac/media`, `imac/synthetic_media`) are item-level
ArrayRecord splits (`train_images`, `train_music`, ...) read by index: their Items
keep the small fields in memory and the records themselves as `source`, from which
the media (pixels, waveforms) and features are read when needed (acp_jax/feeds.py).
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from acp_jax import MissingInputError
from acp_jax import UserError
from acp_jax import items
from tfds_imac.imac import imac_dataset_builder  # registers the imac builder
from tfds_imac.imac import splits as imac_splits

# The fields of a media config's records that hold its media and features.
MEDIA_FIELDS = ("features", "pixels", "waveform")


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _items(ids_P: np.ndarray, columns: dict[str, np.ndarray]) -> tuple[items.Items, np.ndarray]:
  """Distinct items of one modality and, for each pair, the index of its item."""
  ids, first_P, index_P = np.unique(ids_P, return_index=True, return_inverse=True)
  take = lambda key: columns[key][first_P] if key in columns else None
  emotions = take("emotion")
  item_rows = items.Items(
      ids=tuple(_text(i) for i in ids),
      features_NxD=take("features").astype(np.float32),
      labels_N=take("label").astype(np.int32),
      cues_N=take("cue").astype(np.int32),
      emotions_N=None if emotions is None else emotions.astype(np.int32),
  )
  return item_rows, index_P.astype(np.int32)


def split_from_examples(examples: dict) -> items.Split:
  """A Split from one features-config TFDS split loaded whole as numpy (`batch_size=-1`)."""
  images, image_P = _items(examples["image"]["id"], examples["image"])
  music, music_P = _items(examples["music"]["id"], examples["music"])
  return items.Split(images, music,
                     items.Pairs(image_P, music_P, examples["label"].astype(np.int32)))


def items_of_source(source: Sequence[dict[str, Any]],
                    scan: Sequence[dict[str, Any]] | None = None) -> items.Items:
  """The Items of a media config's item-level split: one pass over its records, keeping
  the small fields; the records (media, features) stay in `source`. `scan`, the same
  records read without decoding their media, makes that pass cheaper."""
  scan = source if scan is None else scan
  columns = {key: [] for key in ("id", "label", "cue", "emotion")}
  for i in range(len(scan)):
    record = scan[i]
    for key, column in columns.items():
      column.append(record[key])
  emotions_N = np.asarray(columns["emotion"], np.int32)
  return items.Items(ids=tuple(_text(i) for i in columns["id"]), features_NxD=None,
                     labels_N=np.asarray(columns["label"], np.int32),
                     cues_N=np.asarray(columns["cue"], np.int32),
                     emotions_N=emotions_N if (emotions_N >= 0).all() else None, source=source)


def split_of_sources(images: items.Items, music: items.Items) -> items.Split:
  """A media config's split: its items, and its fixed pairs by the builder's pairing rule."""
  image_P, music_P, labels_P, _ = imac_splits.make_pairs(images.ids, images.labels_N,
                                                         music.ids, music.labels_N)
  as_int32 = lambda x: np.asarray(x, np.int32)
  fingerprint = imac_splits.pair_fingerprint([images.ids[i] for i in image_P],
                                             [music.ids[j] for j in music_P], labels_P)
  return items.Split(
      images, music, items.Pairs(as_int32(image_P), as_int32(music_P), as_int32(labels_P)),
      fingerprint)


def not_prepared_message(name: str, data_dir: str | None) -> str:
  return (
      f"The dataset '{name}' is not prepared in {data_dir or '~/tensorflow_datasets'}.\n"
      "Prepare the real IMAC corpus (see tfds_imac/imac/README.md for the manual-dir layout):\n"
      "  tfds build --imports tfds_imac imac/features --manual_dir=/path/to/imac_manual_dir\n"
      "or run the demo on generated data, which needs no download:\n"
      "  python launch.py --config=configs/acp.py:synthetic --workdir=/tmp/acp_synthetic")


def load_splits(name: str, data_dir: str | None = None) -> dict[str, items.Split]:
  """All splits of an `imac/...` dataset; `imac/synthetic` is built on first use."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if builder.builder_config.synthetic is None:
      raise MissingInputError(not_prepared_message(name, data_dir))
    builder.download_and_prepare()
  if builder.builder_config.media:
    # The pass that lists a split's items leaves the media encoded: a 60 s waveform is
    # 2.6 MB to inflate, and the pass reads every record once.
    undecoded = {field: tfds.decode.SkipDecoding() for field in MEDIA_FIELDS}
    of = lambda split: items_of_source(
        tfds.data_source(name, split=split, data_dir=data_dir),
        tfds.data_source(name, split=split, data_dir=data_dir, decoders=undecoded))
    read = lambda split: split_of_sources(of(f"{split}_images"), of(f"{split}_music"))
  else:
    read = lambda split: split_from_examples(
        tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1)))
  metadata = builder.info.metadata or {}
  fingerprints = metadata.get("pair_fingerprint", {})
  oracle = metadata.get("oracle_accuracy", {})
  splits = {split: read(split) for split in ("train", "validation", "test")}
  for split_name, split in splits.items():
    # A media config's pairs are recomputed here: they must be the ones the build recorded.
    stored = fingerprints.get(split_name)
    if split.fingerprint is not None and stored is not None and split.fingerprint != stored:
      raise UserError(
          f"The {split_name} pairs of {name} recomputed here (fingerprint {split.fingerprint}) "
          f"are not the ones its build recorded ({stored}): the dataset was built by another "
          "version of the pairing rule. Rebuild it with this version.")
  return {split_name: dataclasses.replace(split, fingerprint=fingerprints.get(split_name),
                                         inception_weights=metadata.get("inception_weights"),
                                         encoders=dataset_encoders(metadata),
                                         oracle_accuracy=oracle.get(split_name),
                                         corpus_root=_corpus_root(builder),
                                         segment_seconds=metadata.get("descriptor", {}).get(
                                             "segment_seconds"))
          for split_name, split in splits.items()}


def dataset_encoders(metadata: dict) -> dict:
  """The metadata's `encoders`; a build older than them used the paper's."""
  return metadata.get("encoders") or {
      "image": "inception", "image_weights": metadata.get("inception_weights"),
      "music": "descriptor", "music_weights": None}


def _corpus_root(builder: tfds.core.DatasetBuilder) -> epath.Path | None:
  """The generated corpus's root (images/<emotion>/<name>) of a synthetic config, if kept."""
  if builder.builder_config.synthetic is None:
    return None
  root = imac_dataset_builder.synthetic_corpus_dir(builder.data_dir_root / "downloads",
                                                   builder.builder_config.synthetic)
  return root if root.exists() else None
