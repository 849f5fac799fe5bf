"""What each model reads per item: the stored features, or inputs made from the media.

ACP-Net reads the dataset's features; the paper's baselines (Table 4) read media:

  config.model      image                          music
  acp               Inception-V3 features          193-d descriptor
  spectrogram_acp   Inception-V3 features          log-spectrogram of the segment
  l3net             pixels                         log-spectrogram of the segment

`prepare(split, config)` puts each modality's model input in `Items.features_NxD`,
so the tables, sampling and evaluation downstream handle every model alike. Media
inputs are made once, on device, when the run starts (they do not change between
steps): uint8 pixels resized to `config.image_size` (kept uint8; the model scales
them), log-spectrograms of the int16 waveforms (`config.spectrogram`, see
features/spectrogram.py). Features and spectrograms are then standardised with the
training statistics (`fit_standardizers`).
"""

from collections.abc import Callable
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from acp_jax import data
from acp_jax import pairs
from acp_jax.features import spectrogram

# config.model -> (image input, music input); every model of models.MODELS has a row.
INPUTS: dict[str, tuple[str, str]] = {
    "acp": ("features", "features"),
    "spectrogram_acp": ("features", "spectrogram"),
    "l3net": ("pixels", "spectrogram"),
}

# Items turned into model inputs per device call: device memory holds one batch.
_BATCH = 32


def _batched(fn: Callable[[jax.Array], jax.Array], rows_NxD: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(fn(jnp.asarray(rows_NxD[start:start + _BATCH])))
                         for start in range(0, len(rows_NxD), _BATCH)])


@functools.partial(jax.jit, static_argnames=("size",))
def _resize(pixels_BxHxWx3: jax.Array, size: int) -> jax.Array:
  resized_BxSxSx3 = jax.image.resize(pixels_BxHxWx3.astype(jnp.float32),
                                     (pixels_BxHxWx3.shape[0], size, size, 3), "linear",
                                     antialias=True)
  return jnp.clip(jnp.round(resized_BxSxSx3), 0, 255).astype(jnp.uint8)


def _inputs(config: ml_collections.ConfigDict) -> tuple[str, str]:
  if config.model not in INPUTS:
    raise ValueError(f"unknown config.model {config.model!r}; known: {sorted(INPUTS)}")
  return INPUTS[config.model]


def _media(items: data.Items, field: str, kind: str, config: ml_collections.ConfigDict
           ) -> np.ndarray:
  media = getattr(items, field)
  if media is None:
    raise ValueError(
        f"config.model={config.model!r} reads {kind}, made from the items' media, but "
        f"{config.dataset!r} has none; use a media config of the same data: "
        "--config.dataset=imac/synthetic_media (or imac/media for the real corpus).")
  return media


def prepare(split: data.Split, config: ml_collections.ConfigDict) -> data.Split:
  """The split with each modality's `features_NxD` replaced by what `config.model` reads."""
  image_input, music_input = _inputs(config)
  images, music = split.images, split.music
  if image_input == "pixels":
    pixels_NxHxWx3 = _media(images, "pixels_NxHxWx3", image_input, config)
    if pixels_NxHxWx3.shape[1:3] != (config.image_size,) * 2:
      pixels_NxHxWx3 = _batched(functools.partial(_resize, size=config.image_size),
                                pixels_NxHxWx3)
    images = dataclasses.replace(images, features_NxD=pixels_NxHxWx3)
  if music_input == "spectrogram":
    waveforms_NxT = _media(music, "waveforms_NxT", music_input, config)
    cfg = spectrogram.SpectrogramConfig(**config.spectrogram)
    music = dataclasses.replace(music, features_NxD=_batched(
        lambda int16_BxT: spectrogram.log_spectrogram(int16_BxT / 32768.0, cfg), waveforms_NxT))
  return dataclasses.replace(split, images=images, music=music)


def fit_standardizers(train_split: data.Split, config: ml_collections.ConfigDict
                      ) -> tuple[pairs.Standardizer | None, pairs.Standardizer | None]:
  """(image, music) training statistics of a prepared split; None for pixels."""
  image_input, _ = _inputs(config)
  image_std = None if image_input == "pixels" else pairs.Standardizer.fit(
      train_split.images.features_NxD)
  return image_std, pairs.Standardizer.fit(train_split.music.features_NxD)
