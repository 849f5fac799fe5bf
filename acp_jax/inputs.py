"""What each model reads per item, and the feeds that bring it to the training loop.

ACP-Net reads the dataset's features; the paper's baselines (Table 4) read media:

  config.model      image                          music
  acp               Inception-V3 features          193-d descriptor
  spectrogram_acp   Inception-V3 features          log-spectrogram of the segment
  l3net             pixels                         log-spectrogram of the segment

`model_input` makes one batch of a modality's model input on device from what an
item's record holds: uint8 pixels resized to `config.image_size` (kept uint8; the
model scales them), log-spectrograms of the int16 waveforms (`config.spectrogram`,
see features/spectrogram.py), or the features. Float inputs are then standardised
with training statistics.

A feed is what the training loop (acp_jax/train.py) reads its pairs and evaluation
embeddings from; it has one interface (`Feed`) and two implementations:
  * `TableFeed`: every item's model input made once (`prepare`) and held in device
    memory, pairs sampled on device each step (acp_jax/pairs.py). ACP-Net's, and the
    baselines' on small corpora (`config.input.stream = False`).
  * `stream.StreamFeed` (acp_jax/stream.py): media read per batch from the items'
    records, model inputs made on device per batch.
"""

from collections.abc import Callable, Iterator
import dataclasses
import functools
import itertools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from acp_jax import data
from acp_jax import objectives
from acp_jax import pairs
from acp_jax.features import spectrogram

# config.model -> (image input, music input); every model of models.MODELS has a row.
INPUTS: dict[str, tuple[str, str]] = {
    "acp": ("features", "features"),
    "spectrogram_acp": ("features", "spectrogram"),
    "l3net": ("pixels", "spectrogram"),
}
# The record field (data.Items.source) each model input is made from.
FIELDS = {"features": "features", "pixels": "pixels", "spectrogram": "waveform"}

# Items turned into model inputs per device call by `prepare`: device memory holds one batch.
_BATCH = 32

Standardizers = tuple[pairs.Standardizer | None, pairs.Standardizer | None]


def kinds(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(image input, music input) of config.model: keys of FIELDS."""
  if config.model not in INPUTS:
    raise ValueError(f"unknown config.model {config.model!r}; known: {sorted(INPUTS)}")
  return INPUTS[config.model]


def streams(config: ml_collections.ConfigDict) -> bool:
  """Whether the run streams its media (acp_jax/stream.py) rather than holding it."""
  return config.get("input", {}).get("stream", False) and kinds(config) != ("features",) * 2


@functools.cache
def _resize_weights(size_in: int, size_out: int) -> np.ndarray:
  """size_out x size_in: jax.image.resize's linear antialias weights along one axis (the
  resize of the identity, which is linear in its input)."""
  with jax.ensure_compile_time_eval():
    return np.asarray(jax.image.resize(jnp.eye(size_in, dtype=jnp.float32),
                                       (size_out, size_in), "linear", antialias=True))


@functools.partial(jax.jit, static_argnames=("size",))
def _resize(pixels_BxHxWx3: jax.Array, size: int) -> jax.Array:
  """jax.image.resize(..., "linear", antialias=True) to size x size, up to float rounding:
  its weights made once on the host, then one matmul per axis, rows first (XLA:CPU ran
  this ~1.3x faster than jax.image.resize's traced weights and three-operand einsum)."""
  rows_SxH = _resize_weights(pixels_BxHxWx3.shape[1], size)
  cols_SxW = _resize_weights(pixels_BxHxWx3.shape[2], size)
  highest = jax.lax.Precision.HIGHEST
  rows_BxSxWx3 = jnp.einsum("sh,bhwc->bswc", rows_SxH, pixels_BxHxWx3.astype(jnp.float32),
                            precision=highest)
  resized_BxSxSx3 = jnp.einsum("tw,bswc->bstc", cols_SxW, rows_BxSxWx3, precision=highest)
  return jnp.clip(jnp.round(resized_BxSxSx3), 0, 255).astype(jnp.uint8)


def model_input(kind: str, raw_BxX: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """One batch of a modality's model input from its records' field `FIELDS[kind]`."""
  if kind == "pixels":
    if raw_BxX.shape[1:3] == (config.image_size,) * 2:
      return raw_BxX
    return _resize(raw_BxX, config.image_size)
  if kind == "spectrogram":
    cfg = spectrogram.SpectrogramConfig(**config.spectrogram)
    return spectrogram.log_spectrogram(raw_BxX / 32768.0, cfg)
  return raw_BxX.astype(jnp.float32)


def read_field(source, field: str, rows) -> np.ndarray:
  """The field of records `rows` of a source, stacked."""
  return np.stack([source[int(i)][field] for i in rows])


def no_media(config: ml_collections.ConfigDict, kind: str) -> None:
  raise ValueError(
      f"config.model={config.model!r} reads {kind}, made from the items' media, but "
      f"{config.dataset!r} has none; use a media config of the same data: "
      "--config.dataset=imac/synthetic_media (or imac/media for the real corpus).")


def first_input(items: data.Items, kind: str, config: ml_collections.ConfigDict) -> jax.Array:
  """The model input of the first item (1 x ...): of prepared items, or made from its record."""
  if items.features_NxD is not None:
    return jnp.asarray(items.features_NxD[:1])
  return model_input(kind, jnp.asarray(read_field(items.source, FIELDS[kind], [0])), config)


def _prepared(items: data.Items, kind: str, config: ml_collections.ConfigDict) -> data.Items:
  if items.source is None:
    if kind != "features":
      no_media(config, kind)
    return items
  num = len(items.ids)
  rows = lambda start: range(start, min(start + _BATCH, num))
  make = lambda start: np.asarray(model_input(
      kind, jnp.asarray(read_field(items.source, FIELDS[kind], rows(start))), config))
  return dataclasses.replace(items, features_NxD=np.concatenate(
      [make(start) for start in range(0, num, _BATCH)]))


def prepare(split: data.Split, config: ml_collections.ConfigDict) -> data.Split:
  """The split with each modality's `features_NxD` replaced by what `config.model` reads."""
  image_kind, music_kind = kinds(config)
  return dataclasses.replace(split, images=_prepared(split.images, image_kind, config),
                             music=_prepared(split.music, music_kind, config))


def fit_standardizers(train_split: data.Split, config: ml_collections.ConfigDict
                      ) -> Standardizers:
  """(image, music) training statistics of a prepared split; None for pixels."""
  image_kind, _ = kinds(config)
  image_std = None if image_kind == "pixels" else pairs.Standardizer.fit(
      train_split.images.features_NxD)
  return image_std, pairs.Standardizer.fit(train_split.music.features_NxD)


def fixed_pairs(split: data.Split) -> dict[str, np.ndarray]:
  return {"image_P": split.pairs.image_P, "music_P": split.pairs.music_P,
          "label_P": split.pairs.labels_P}


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host arrays as global arrays with a full copy on every device (multi-process safe)."""
  sharding = NamedSharding(mesh, P())
  place = lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                                 lambda index: np.asarray(x)[index])
  return jax.tree.map(place, tree)


def embed_rows(model: Any, variables: dict, rows_NxD: jax.Array, method: str,
               batch_size: int | None) -> jax.Array:
  """Tower embeddings of model-input rows, `batch_size` rows at a time (all if None)."""
  apply = lambda x_NxD: model.apply(variables, x_NxD, method=method)
  if batch_size is None:
    return apply(rows_NxD)
  return jax.lax.map(lambda x_D: apply(x_D[None])[0], rows_NxD,
                     batch_size=min(batch_size, rows_NxD.shape[0]))


def sample_inputs(key: jax.Array, tables: pairs.Tables, batch_size: int, mesh: jax.sharding.Mesh,
                  sample: Callable = pairs.sample_pairs) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(image_BxD, music_BxD, target_B) drawn on device from item tables by `sample`.

  `sample(key, tables, batch_size) -> (image_B, music_B, target_B)` is an objective's
  draw (acp_jax/objectives.py); the default, balanced pairs with their labels.
  """
  image_B, music_B, target_B = jax.lax.with_sharding_constraint(
      sample(key, tables, batch_size), NamedSharding(mesh, P("data")))
  return *pairs.gather(tables, image_B, music_B), target_B


def item_shapes(split: data.Split, config: ml_collections.ConfigDict
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """One item's (image, music) model-input shape."""
  return tuple(first_input(items, kind, config).shape[1:]
               for items, kind in zip((split.images, split.music), kinds(config)))


class Feed(Protocol):
  """Where the training loop's pairs and evaluation embeddings come from."""
  splits: dict[str, data.Split]  # the analysis's view of the splits (TableFeed: prepared)
  standardizers: Standardizers
  fixed: dict[str, dict[str, jax.Array]]  # each split's fixed pairs, on every device
  item_shapes: tuple[tuple[int, ...], tuple[int, ...]]  # one item's (image, music) model input
  per_step: bool  # train data has a leading axis of steps per dispatch (and then seeds)
  train_spec: Any  # the train data of a dispatch, or its shapes (jax.ShapeDtypeStruct)

  def train_data(self, step: int, num_steps: int) -> Iterator[Any]:
    """What each dispatch of steps `step` .. `num_steps - 1` reads (`pairs` gets one step's
    of one seed)."""

  def pairs(self, key: jax.Array, step_data: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(image_BxD, music_BxD, label_B) of one step of one seed, traced in the step."""

  def embed(self, model: Any, variables_S: dict, split: str) -> tuple[jax.Array, jax.Array]:
    """(image_SxNxE, music_SxMxE): every seed's tower embeddings of a split's items."""

  def close(self) -> None:
    """Stops what `train_data` started."""


class TableFeed:
  """Every split's model inputs in device memory; pairs sampled on device each step."""
  per_step = False

  def __init__(self, config: ml_collections.ConfigDict, splits: dict[str, data.Split],
               mesh: jax.sharding.Mesh):
    self.splits = {name: prepare(split, config) for name, split in splits.items()}
    self.standardizers = fit_standardizers(self.splits["train"], config)
    self.tables = {name: replicate(pairs.make_tables(split, *self.standardizers), mesh)
                   for name, split in self.splits.items()}
    self.fixed = {name: replicate(fixed_pairs(split), mesh) for name, split in self.splits.items()}
    self.train_spec = self.tables["train"]
    self.item_shapes = item_shapes(self.splits["train"], config)
    self.batch_size, self.mesh = config.batch_size, mesh
    self.sample = objectives.create_objective(config).sample

  def train_data(self, step: int, num_steps: int) -> Iterator[pairs.Tables]:
    return itertools.repeat(self.tables["train"])

  def pairs(self, key: jax.Array, tables: pairs.Tables
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    return sample_inputs(key, tables, self.batch_size, self.mesh, self.sample)

  def embed(self, model: Any, variables_S: dict, split: str) -> tuple[jax.Array, jax.Array]:
    return _embed_tables(model, self.batch_size, variables_S, self.tables[split])

  def close(self) -> None:
    pass


@functools.partial(jax.jit, static_argnums=(0, 1))
def _embed_tables(model: Any, batch_size: int, variables_S: dict, tables: pairs.Tables
                  ) -> tuple[jax.Array, jax.Array]:
  embed = lambda variables: (
      embed_rows(model, variables, tables.image_NxD, "embed_image", batch_size),
      embed_rows(model, variables, tables.music_MxD, "embed_music", batch_size))
  return jax.vmap(embed)(variables_S)
