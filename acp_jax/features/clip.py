"""Frozen CLIP and SigLIP image towers from keras-hub, on the backend Keras runs on.

The weights are a keras-hub preset directory that the user downloads (Kaggle Models,
`ENCODERS[name].download`) and passes in; nothing is ever downloaded here. A preset
directory holds `config.json` (the serialized backbone), `model.weights.h5`,
`image_converter.json` (resize and normalisation), `metadata.json`, and the text
tokenizer (`tokenizer.json`, `assets/tokenizer/`), which the image tower does not read.

`VisionEmbedder` loads the backbone, keeps its image side only (CLIP: vision encoder,
class-token pooler, projection; SigLIP: vision encoder with its attention-pooling
head), and runs that tower with the preset's image converter in one compiled program
on a fixed padded batch: on Keras's JAX backend the tower's `stateless_call` inside
`jax.jit` (uint8 pixels go to the device; one program per input image shape), on its
TensorFlow backend a `tf.function`. An embedding is the projected image embedding that the
contrastive loss compares, L2-normalised (as the model's CLIPHead / SigLIPHead do
before taking logits). `reference_embed` is keras-hub's own path on the same weights:
the converter on the host, then the tower's `predict`.

Keras picks its backend once per process, when it is first imported. This module sets
`KERAS_BACKEND=jax` if keras is not imported yet and the variable is unset; a process
whose Keras already runs on TensorFlow (the Inception embedder's CPU path, e.g. a
process that built `imac/synthetic` first) runs the towers there. On accelerators set
`KERAS_BACKEND=jax`: TensorFlow is kept off them (launch.py).
"""

from collections.abc import Callable
import dataclasses
import importlib.util
import os
import sys
from typing import Any

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from acp_jax.features import encoder_weights

INSTALL = "pip install -e .[clip] && pip install --no-deps keras-hub==0.32.0"
# The preset files the image tower reads; a downloaded preset has more (see above).
WEIGHTS_FILES = ("config.json", "model.weights.h5", "image_converter.json")


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """One frozen image tower: its keras-hub preset and where its weights come from."""
  name: str
  preset: str            # keras-hub preset name; also the weights directory's usual name
  backbone_class: str    # `registered_name` of the backbone in the preset's config.json
  dim: int               # embedding size of the real preset
  image_size: int        # input side of the real preset (others are resized to it)
  download: str          # where a user downloads the preset directory


ENCODERS = {
    "clip": EncoderSpec(
        "clip", "clip_vit_base_patch32", "keras_hub>CLIPBackbone", 512, 224,
        "https://www.kaggle.com/models/keras/clip/keras/clip_vit_base_patch32"),
    "siglip": EncoderSpec(
        "siglip", "siglip_base_patch16_224", "keras_hub>SigLIPBackbone", 768, 224,
        "https://www.kaggle.com/models/keras/siglip/keras/siglip_base_patch16_224"),
}
# The real presets' image converters (keras-hub's convert_{clip,siglip}_checkpoints.py):
# CLIP scales by its ImageNet-like mean/std after a bicubic resize of the centre crop;
# SigLIP maps pixels to [-1, 1] after an antialiased bicubic resize of the whole image.
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_CONVERTERS = {
    "clip": dict(scale=[1 / 255 / s for s in _CLIP_STD],
                 offset=[-m / s for m, s in zip(_CLIP_MEAN, _CLIP_STD)],
                 interpolation="bicubic"),
    "siglip": dict(scale=[1 / 255 / 0.5] * 3, offset=[-1.0] * 3, interpolation="bicubic",
                   antialias=True, crop_to_aspect_ratio=False),
}
# `save_random_weights`' tiny towers: a test embeds a few images in well under a second.
_TINY_IMAGE_SIZE = 32
_TINY = dict(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)


def _spec(name: str) -> EncoderSpec:
  if name not in ENCODERS:
    raise ValueError(f"Unknown image encoder {name!r}; use one of {sorted(ENCODERS)}.")
  return ENCODERS[name]


def check_weights_dir(name: str, path: str | os.PathLike) -> epath.Path:
  """`path` as an epath if it holds `name`'s keras-hub preset and keras-hub is installed.

  Raises FileNotFoundError / ValueError naming the directory and the expected files, or
  ImportError naming the install command; reads only the directory listing and
  config.json, so it is cheap enough to run before any extraction.
  """
  spec = _spec(name)
  path = epath.Path(path)
  fetch = (f"download the keras-hub preset {spec.preset} from {spec.download} and unpack "
           f"it there (it must hold {', '.join(WEIGHTS_FILES)})")
  config = encoder_weights.read_config(path, WEIGHTS_FILES, name, fetch)
  found = config.get("registered_name")
  if found != spec.backbone_class:
    raise ValueError(
        f"{path} holds a {found or 'non-keras-hub'} preset, not {spec.preset} "
        f"({spec.backbone_class}): {fetch}.")
  if importlib.util.find_spec("keras_hub") is None:
    raise ImportError(f"The {name} image tower needs keras-hub: {INSTALL}")
  return path


BACKENDS = ("jax", "tensorflow")  # the Keras backends the towers run on


def _keras():
  """The keras module, on the JAX backend if keras is not imported yet (and no
  KERAS_BACKEND says otherwise), else on the backend it has, one of BACKENDS."""
  if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras  # pylint: disable=g-import-not-at-top  (the backend is chosen on import)
  if keras.backend.backend() not in BACKENDS:
    raise RuntimeError(
        f"The CLIP/SigLIP towers run on Keras's JAX or TensorFlow backend, but this "
        f"process's Keras uses {keras.backend.backend()!r}: set KERAS_BACKEND=jax before "
        "anything imports keras.")
  return keras


def load_preset(name: str, weights_dir: str | os.PathLike) -> tuple[Any, Any]:
  """(keras-hub backbone, image converter) of the preset in `weights_dir`, read locally."""
  path = check_weights_dir(name, weights_dir)
  _keras()
  import keras_hub  # pylint: disable=g-import-not-at-top  (optional; after the backend)
  # An absolute local path: from_preset reads it as a directory, never as a built-in
  # preset name or a Kaggle / Hugging Face handle, so nothing is fetched.
  preset = os.fspath(path.resolve())
  return (keras_hub.models.Backbone.from_preset(preset),
          keras_hub.layers.ImageConverter.from_preset(preset))


def vision_tower(backbone):
  """A Keras model: preprocessed images -> projected image embeddings (not normalised),
  sharing the backbone's layers; the text tower is not part of it."""
  keras = _keras()
  images = keras.Input(shape=backbone.vision_encoder.image_shape, name="images")
  return keras.Model(images, backbone.get_vision_embeddings(images))


def l2_normalise(x_NxD):
  """x / ||x||, the normalisation CLIPHead and SigLIPHead apply before their logits (any
  backend's arrays, or numpy)."""
  ops = _keras().ops
  return x_NxD / ops.sqrt(ops.sum(ops.square(x_NxD), axis=-1, keepdims=True))


class VisionEmbedder:
  """uint8 images -> L2-normalised CLIP / SigLIP image embeddings, batched and compiled.

  Images of any size are resized by the preset's converter (CLIP: centre crop to the
  aspect ratio, bicubic; SigLIP: whole image, antialiased bicubic) and normalised
  (CLIP: per-channel mean/std; SigLIP: [-1, 1]) inside the same program as the tower.
  Batches are padded to `batch_size` (one program; an image's embedding does not
  depend on its batch); on JAX they are split over every local device.
  """

  def __init__(self, name: str, weights_dir: str | os.PathLike, batch_size: int = 32):
    backbone, converter = load_preset(name, weights_dir)
    tower = vision_tower(backbone)
    self.name, self.batch_size = name, batch_size
    self.dim = int(tower.output.shape[-1])
    self.image_size = int(converter.image_size[0])
    self.backend = _keras().backend.backend()
    self._embed_batch = (_jax_batch_embedder(tower, converter, batch_size)
                         if self.backend == "jax" else _tf_batch_embedder(tower, converter))

  def __call__(self, images_NxHxWx3: np.ndarray) -> np.ndarray:
    """RGB images (uint8, N x H x W x 3) -> float32 N x dim embeddings on the host."""
    images_NxHxWx3 = np.asarray(images_NxHxWx3)
    if images_NxHxWx3.ndim != 4 or images_NxHxWx3.shape[-1] != 3:
      raise ValueError(f"Expected RGB images shaped NxHxWx3, got {images_NxHxWx3.shape}; "
                       "stack the images along axis 0 and convert grey or RGBA to RGB.")
    # Dispatch every batch before fetching any (asynchronous dispatch on JAX).
    feats = [self._embed_padded(images_NxHxWx3[start:start + self.batch_size])
             for start in range(0, len(images_NxHxWx3), self.batch_size)]
    if not feats:
      return np.zeros((0, self.dim), np.float32)
    return np.concatenate(jax.device_get(feats)).astype(np.float32, copy=False)

  def _embed_padded(self, images_BxHxWx3: np.ndarray):
    """A batch padded to `batch_size`: one compiled program per image shape."""
    pad = self.batch_size - len(images_BxHxWx3)
    padded = np.pad(images_BxHxWx3, ((0, pad), (0, 0), (0, 0), (0, 0)))
    return self._embed_batch(padded)[:len(images_BxHxWx3)]


def _jax_batch_embedder(tower, converter, batch_size: int) -> Callable:
  """Padded uint8 batch -> embeddings (a device array, not waited for): the tower's
  `stateless_call` in one `jax.jit`, data-parallel over every local device."""
  devices = jax.devices()
  if batch_size % len(devices):
    raise ValueError(f"batch_size={batch_size} must be a multiple of the {len(devices)} "
                     "devices it is split over; pick a multiple.")
  mesh = Mesh(np.asarray(devices), ("data",))
  batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  variables = jax.device_put(([v.value for v in tower.trainable_variables],
                              [v.value for v in tower.non_trainable_variables]), replicated)

  def embed(variables, images_BxHxWx3):
    x = converter(images_BxHxWx3.astype(jnp.float32))
    feat_BxD, _ = tower.stateless_call(*variables, x, training=False)
    return l2_normalise(feat_BxD)

  embed = jax.jit(embed, in_shardings=(replicated, batch_sharding),
                  out_shardings=batch_sharding)
  return lambda images_BxHxWx3: embed(variables, jax.device_put(images_BxHxWx3,
                                                                batch_sharding))


def _tf_batch_embedder(tower, converter) -> Callable:
  """Padded uint8 batch -> embeddings: the tower in one `tf.function` on TensorFlow's Keras
  (the CPU kernels Inception's embedder uses there)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function(reduce_retracing=True)
  def embed(images_BxHxWx3):
    return l2_normalise(tower(converter(tf.cast(images_BxHxWx3, tf.float32)), training=False))

  return lambda images_BxHxWx3: embed(images_BxHxWx3).numpy()


def reference_embed(tower, converter, images_NxHxWx3: np.ndarray,
                    batch_size: int = 32) -> np.ndarray:
  """keras-hub's straightforward path: the converter, then `predict` of the image tower
  (`vision_tower(backbone)`), L2-normalised like `VisionEmbedder` (float32 N x dim)."""
  x = converter(np.asarray(images_NxHxWx3, np.float32))
  feat_NxD = tower.predict(x, batch_size=batch_size, verbose=0)
  return np.asarray(l2_normalise(feat_NxD), np.float32)


def save_random_weights(name: str, out_dir: str | os.PathLike, seed: int = 0,
                        **tower_sizes) -> epath.Path:
  """A seeded random-weight `name` preset in `out_dir`, in the format of the real one.

  Tiny by default (32x32 images, 2 layers of width 32, both towers); `tower_sizes`
  overrides the vision encoder's arguments (with `image_size`, `projection_dim`): the
  real architecture with random weights is `REAL_SIZES[name]`. The image converter
  is the real preset's, at this image size. Seeds Keras' global RNGs
  (`keras.utils.set_random_seed`), as keras-hub's initialisers draw from them.
  """
  keras = _keras()
  import keras_hub  # pylint: disable=g-import-not-at-top
  _spec(name)
  sizes = {**_TINY, "image_size": _TINY_IMAGE_SIZE, "projection_dim": 16, **tower_sizes}
  image_size, projection_dim = sizes.pop("image_size"), sizes.pop("projection_dim")
  keras.utils.set_random_seed(seed)
  image_shape = (image_size, image_size, 3)
  # The text tower only has to exist (the preset format is the whole backbone): tiny.
  text = dict(vocabulary_size=64, embedding_dim=sizes["hidden_dim"],
              hidden_dim=sizes["hidden_dim"], num_layers=1, num_heads=sizes["num_heads"],
              intermediate_dim=64, max_sequence_length=8)
  if name == "clip":
    backbone = keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(**sizes, image_shape=image_shape),
        keras_hub.models.CLIPTextEncoder(**text), projection_dim=projection_dim)
    converter = keras_hub.layers.CLIPImageConverter(image_size=image_shape[:2],
                                                    **_CONVERTERS[name])
  else:
    backbone = keras_hub.models.SigLIPBackbone(
        keras_hub.models.SigLIPVisionEncoder(**sizes, image_shape=image_shape),
        keras_hub.models.SigLIPTextEncoder(**text))
    converter = keras_hub.layers.SigLIPImageConverter(image_size=image_shape[:2],
                                                      **_CONVERTERS[name])
  out = epath.Path(out_dir)
  backbone.save_to_preset(os.fspath(out))
  converter.save_to_preset(os.fspath(out))
  return out


# The real presets' vision towers (keras-hub's preset configs), for `save_random_weights`
# when the sizes matter (bench/features.py: real speeds with random weights).
REAL_SIZES = {
    "clip": dict(patch_size=32, hidden_dim=768, num_layers=12, num_heads=12,
                 intermediate_dim=3072, image_size=224, projection_dim=512),
    "siglip": dict(patch_size=16, hidden_dim=768, num_layers=12, num_heads=12,
                   intermediate_dim=3072, image_size=224),
}
