"""What each model reads per item, made from what the dataset holds, and standardised.

ACP-Net reads the dataset's features; the paper's baselines (Table 4) read media:

  config.model      image                          music
  acp               Inception-V3 features          193-d descriptor
  spectrogram_acp   Inception-V3 features          log-spectrogram of the segment
  l3net             pixels                         log-spectrogram of the segment

`model_input` makes one batch of a modality's model input on device from what an
item's record holds: uint8 pixels resized to `config.image_size` (kept uint8; the
model scales them), log-spectrograms of the int16 waveforms (`config.spectrogram`,
see features/spectrogram.py), or the features. Float inputs are then standardised
with training statistics (`Standardizer`). acp_jax/feeds.py brings them to the loop
and to evaluation, held in device memory or streamed.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from acp_jax import UserError
from acp_jax import items
from acp_jax.features import spectrogram

# config.model -> (image input, music input); every model of models.MODELS has a row.
INPUTS: dict[str, tuple[str, str]] = {
    "acp": ("features", "features"),
    "spectrogram_acp": ("features", "spectrogram"),
    "l3net": ("pixels", "spectrogram"),
}
# The record field (items.Items.source) each model input is made from.
FIELDS = {"features": "features", "pixels": "pixels", "spectrogram": "waveform"}

# Items made into model inputs per device call by `model_inputs`: device memory holds one batch.
_BATCH = 32


def kinds(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(image input, music input) of config.model: keys of FIELDS."""
  if config.model not in INPUTS:
    raise ValueError(f"unknown config.model {config.model!r}; known: {sorted(INPUTS)}")
  return INPUTS[config.model]


def streams(config: ml_collections.ConfigDict) -> bool:
  """Whether the run streams its media (acp_jax/feeds.py) rather than holding it."""
  return config.get("input", {}).get("stream", False) and kinds(config) != ("features",) * 2


def _safe_std(std_D: np.ndarray) -> np.ndarray:
  # A constant feature carries nothing; leave it at zero instead of dividing by 0.
  return np.where(std_D > 0, std_D, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Per-dimension mean and std of one modality's training inputs.

  The statistics are over every axis but the last: per feature of N x D features,
  per frequency bin of N x T x F spectrograms.
  """
  mean_D: np.ndarray
  std_D: np.ndarray

  @classmethod
  def fit(cls, x_NxD: np.ndarray) -> "Standardizer":
    """The statistics of inputs held at once."""
    axes = tuple(range(x_NxD.ndim - 1))
    return cls(x_NxD.mean(axis=axes), _safe_std(x_NxD.std(axis=axes)))

  @classmethod
  def of_moments(cls, count: int, sum_D: np.ndarray, squares_D: np.ndarray) -> "Standardizer":
    """The statistics of inputs read in batches: their count, sum and sum of squares."""
    mean_D = sum_D / count
    std_D = np.sqrt(np.maximum(squares_D / count - mean_D ** 2, 0))
    return cls(mean_D.astype(np.float32), _safe_std(std_D))

  def __call__(self, x_NxD: Any) -> Any:
    return ((x_NxD - self.mean_D) / self.std_D).astype(np.float32)


def standardize(standardizer: Standardizer | None, x: Any) -> Any:
  """x standardised; as it is without a standardizer (uint8 pixels)."""
  return x if standardizer is None else standardizer(x)


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
  raise UserError(
      f"config.model={config.model!r} reads {kind}, made from the items' media, but "
      f"{config.dataset!r} has none; use a media config of the same data: "
      "--config.dataset=imac/synthetic_media (or imac/media for the real corpus).")


def first_input(items_of: items.Items, kind: str, config: ml_collections.ConfigDict
                ) -> jax.Array:
  """The model input of the first item (1 x ...), made from its features or its record."""
  if items_of.source is None:
    if kind != "features":
      no_media(config, kind)
    return jnp.asarray(items_of.features_NxD[:1])
  return model_input(kind, jnp.asarray(read_field(items_of.source, FIELDS[kind], [0])), config)


def model_inputs(items_of: items.Items, kind: str, config: ml_collections.ConfigDict
                 ) -> np.ndarray:
  """N x ...: the model input of every item, made `_BATCH` items per device call."""
  if items_of.source is None:
    if kind != "features":
      no_media(config, kind)
    return items_of.features_NxD
  num = len(items_of.ids)
  rows = lambda start: range(start, min(start + _BATCH, num))
  make = lambda start: np.asarray(model_input(
      kind, jnp.asarray(read_field(items_of.source, FIELDS[kind], rows(start))), config))
  return np.concatenate([make(start) for start in range(0, num, _BATCH)])


def item_shapes(split: items.Split, config: ml_collections.ConfigDict
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """One item's (image, music) model-input shape."""
  return tuple(first_input(its, kind, config).shape[1:]
               for its, kind in zip((split.images, split.music), kinds(config)))


def fixed_pairs(split: items.Split) -> dict[str, np.ndarray]:
  return {"image_P": split.pairs.image_P, "music_P": split.pairs.music_P,
          "label_P": split.pairs.labels_P}


def make_mesh(batch_size: int) -> jax.sharding.Mesh:
  """A 1-D 'data' mesh over all devices; raises UserError if the batch does not split."""
  num_devices = jax.device_count()
  if batch_size % 2:
    raise UserError(f"batch_size must be even (half true, half false pairs), got {batch_size}")
  if batch_size % num_devices:
    raise UserError(f"batch_size {batch_size} is not divisible by the {num_devices} devices; "
                     f"use a multiple of {num_devices}, e.g. --config.batch_size="
                     f"{max(1, round(batch_size / num_devices)) * num_devices}")
  # Auto axes: XLA carries the batch sharding through the model (GSPMD).
  return jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host arrays as global arrays with a full copy on every device (multi-process safe)."""
  sharding = NamedSharding(mesh, P())
  place = lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                                 lambda index: np.asarray(x)[index])
  return jax.tree.map(place, tree)


def embed_rows(model: Any, variables: dict, rows_NxD: jax.Array, method: str,
               batch_size: int) -> jax.Array:
  """Tower embeddings of model-input rows, `batch_size` rows at a time."""
  apply = lambda x_NxD: model.apply(variables, x_NxD, method=method)
  return jax.lax.map(lambda x_D: apply(x_D[None])[0], rows_NxD,
                     batch_size=min(batch_size, rows_NxD.shape[0]))
