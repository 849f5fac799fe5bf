"""Inception-V3 image features in Flax, weight-compatible with Keras.

`InceptionV3` is `keras.applications.InceptionV3(include_top=False, pooling='avg')`
rewritten in flax.linen: same layers, same order, same padding and pooling rules, so
the Keras ImageNet weights file loads into it (`load_keras_weights`) and the pooled
2048-d features agree with Keras to float32 rounding. `ImageEmbedder` is the batch
entry point the dataset builder uses: uint8 images in, features out. On accelerators it
runs this network jitted, data-parallel over every local device, each batch norm folded
into its convolution (`fold_batch_norm`). On CPU it runs Keras' own InceptionV3 carrying
the same variables (`keras_inception_v3`): TensorFlow's oneDNN convolutions are faster
there than XLA:CPU's (`default_backend` has the figures).

The Keras ImageNet weights (`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`)
are at https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/.
Without them, `ImageEmbedder.from_weights_file(None)` uses a seeded random-init
network, initialised like Keras' `weights=None`, and warns that it does.
"""

import functools
import os
import warnings
from typing import Callable

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

FEATURE_DIM = 2048
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
               "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
# Keras' InceptionV3 rejects inputs smaller than this; the stem's valid convolutions
# and pools leave nothing to pool below it.
MIN_IMAGE_SIDE = 75
# Keras' BatchNormalization default (Flax's is 1e-5).
BATCH_NORM_EPSILON = 1e-3


class ConvBN(nn.Module):
  """Keras' `conv2d_bn`: bias-free convolution, batch norm without scale, ReLU.

  With `folded`, the batch norm is already folded into the kernel and a conv bias
  (`fold_batch_norm`), so no batch-norm arithmetic is left at run time.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str = "SAME"
  folded: bool = False
  # Average-pool the input first (the pool branches, whose convolutions are 1x1).
  pool_input: bool = False

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    conv = nn.Conv(self.features, self.kernel_size, self.strides, padding=self.padding,
                   use_bias=self.folded, kernel_init=nn.initializers.glorot_uniform(),
                   name="conv")
    if self.pool_input and self.folded:
      # A 1x1 convolution with its bias commutes with the average pool (both linear,
      # the pool's weights sum to 1), and its output has 4-11x fewer channels to pool.
      x = _avg_pool(conv(x_BxHxWxC))
    elif self.pool_input:
      x = conv(_avg_pool(x_BxHxWxC))
    else:
      x = conv(x_BxHxWxC)
    if not self.folded:
      x = nn.BatchNorm(use_running_average=True, use_scale=False,
                       epsilon=BATCH_NORM_EPSILON, name="bn")(x)
    return nn.relu(x)


ConvBNFn = Callable[..., jax.Array]


def _conv_bn(x: jax.Array, features: int, rows: int, cols: int, strides: int = 1,
             padding: str = "SAME", pool_input: bool = False, *, folded: bool) -> jax.Array:
  # Called inside InceptionV3's compact __call__, so every ConvBN is auto-named
  # ConvBN_<i> in call order; the call order below is Keras' construction order,
  # which is what lets load_keras_weights pair layers by position.
  return ConvBN(features, (rows, cols), (strides, strides), padding, folded, pool_input)(x)


def _max_pool(x_BxHxWxC: jax.Array) -> jax.Array:
  """3x3 max pool, stride 2, no padding."""
  # As the maximum of strided slices: one elementwise fusion, 2-7x faster on XLA:CPU
  # than its reduce-window loop.
  out_h, out_w = (x_BxHxWxC.shape[1] - 1) // 2, (x_BxHxWxC.shape[2] - 1) // 2
  x = functools.reduce(jnp.maximum, [x_BxHxWxC[:, i:i + 2 * out_h - 1:2] for i in range(3)])
  return functools.reduce(jnp.maximum, [x[:, :, j:j + 2 * out_w - 1:2] for j in range(3)])


def _avg_pool(x: jax.Array) -> jax.Array:
  # Keras (TensorFlow semantics) averages over the in-image part of the window only.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _mixed_35(conv_bn: ConvBNFn, x: jax.Array, pool_features: int) -> jax.Array:
  """mixed0-2: 35x35 grid (at 299x299 input)."""
  branch1x1 = conv_bn(x, 64, 1, 1)
  branch5x5 = conv_bn(x, 48, 1, 1)
  branch5x5 = conv_bn(branch5x5, 64, 5, 5)
  branch3x3dbl = conv_bn(x, 64, 1, 1)
  branch3x3dbl = conv_bn(branch3x3dbl, 96, 3, 3)
  branch3x3dbl = conv_bn(branch3x3dbl, 96, 3, 3)
  branch_pool = conv_bn(x, pool_features, 1, 1, pool_input=True)
  return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


def _reduce_35_to_17(conv_bn: ConvBNFn, x: jax.Array) -> jax.Array:
  """mixed3: grid reduction 35x35 -> 17x17."""
  branch3x3 = conv_bn(x, 384, 3, 3, strides=2, padding="VALID")
  branch3x3dbl = conv_bn(x, 64, 1, 1)
  branch3x3dbl = conv_bn(branch3x3dbl, 96, 3, 3)
  branch3x3dbl = conv_bn(branch3x3dbl, 96, 3, 3, strides=2, padding="VALID")
  return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x)], axis=-1)


def _mixed_17(conv_bn: ConvBNFn, x: jax.Array, width: int) -> jax.Array:
  """mixed4-7: 17x17 grid with factorised 7x7 convolutions `width` channels wide."""
  branch1x1 = conv_bn(x, 192, 1, 1)
  branch7x7 = conv_bn(x, width, 1, 1)
  branch7x7 = conv_bn(branch7x7, width, 1, 7)
  branch7x7 = conv_bn(branch7x7, 192, 7, 1)
  branch7x7dbl = conv_bn(x, width, 1, 1)
  branch7x7dbl = conv_bn(branch7x7dbl, width, 7, 1)
  branch7x7dbl = conv_bn(branch7x7dbl, width, 1, 7)
  branch7x7dbl = conv_bn(branch7x7dbl, width, 7, 1)
  branch7x7dbl = conv_bn(branch7x7dbl, 192, 1, 7)
  branch_pool = conv_bn(x, 192, 1, 1, pool_input=True)
  return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


def _reduce_17_to_8(conv_bn: ConvBNFn, x: jax.Array) -> jax.Array:
  """mixed8: grid reduction 17x17 -> 8x8."""
  branch3x3 = conv_bn(x, 192, 1, 1)
  branch3x3 = conv_bn(branch3x3, 320, 3, 3, strides=2, padding="VALID")
  branch7x7x3 = conv_bn(x, 192, 1, 1)
  branch7x7x3 = conv_bn(branch7x7x3, 192, 1, 7)
  branch7x7x3 = conv_bn(branch7x7x3, 192, 7, 1)
  branch7x7x3 = conv_bn(branch7x7x3, 192, 3, 3, strides=2, padding="VALID")
  return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x)], axis=-1)


def _mixed_8(conv_bn: ConvBNFn, x: jax.Array) -> jax.Array:
  """mixed9-10: 8x8 grid with expanded 1x3 / 3x1 filter banks."""
  branch1x1 = conv_bn(x, 320, 1, 1)
  branch3x3 = conv_bn(x, 384, 1, 1)
  branch3x3 = jnp.concatenate(
      [conv_bn(branch3x3, 384, 1, 3), conv_bn(branch3x3, 384, 3, 1)], axis=-1)
  branch3x3dbl = conv_bn(x, 448, 1, 1)
  branch3x3dbl = conv_bn(branch3x3dbl, 384, 3, 3)
  branch3x3dbl = jnp.concatenate(
      [conv_bn(branch3x3dbl, 384, 1, 3), conv_bn(branch3x3dbl, 384, 3, 1)], axis=-1)
  branch_pool = conv_bn(x, 192, 1, 1, pool_input=True)
  return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
  """Keras' InceptionV3(include_top=False, pooling='avg'), inference mode.

  Variables: `params['ConvBN_<i>']` and `batch_stats['ConvBN_<i>']`, i = 0..93 in
  Keras' layer construction order; with `folded_batch_norm`, `params['ConvBN_<i>']`
  only, as `fold_batch_norm` makes them.
  """
  folded_batch_norm: bool = False

  @nn.compact
  def __call__(self, x_BxHxWx3: jax.Array) -> jax.Array:
    """Inputs already scaled to [-1, 1] (`preprocess`); returns Bx2048 features."""
    conv_bn = functools.partial(_conv_bn, folded=self.folded_batch_norm)
    x = conv_bn(x_BxHxWx3, 32, 3, 3, strides=2, padding="VALID")
    x = conv_bn(x, 32, 3, 3, padding="VALID")
    x = conv_bn(x, 64, 3, 3)
    x = _max_pool(x)
    x = conv_bn(x, 80, 1, 1, padding="VALID")
    x = conv_bn(x, 192, 3, 3, padding="VALID")
    x = _max_pool(x)
    for pool_features in (32, 64, 64):
      x = _mixed_35(conv_bn, x, pool_features)
    x = _reduce_35_to_17(conv_bn, x)
    for width in (128, 160, 160, 192):
      x = _mixed_17(conv_bn, x, width)
    x = _reduce_17_to_8(conv_bn, x)
    for _ in range(2):
      x = _mixed_8(conv_bn, x)
    return jnp.mean(x, axis=(1, 2))


def preprocess(images_BxHxWx3: jax.Array) -> jax.Array:
  """Keras' Inception preprocessing: pixel values 0..255 -> float32 in [-1, 1]."""
  return jnp.asarray(images_BxHxWx3, jnp.float32) / 127.5 - 1.0


def fold_batch_norm(variables: dict) -> dict:
  """`InceptionV3` variables -> the same network's `InceptionV3(folded_batch_norm=True)`.

  Inference-mode batch norm is a per-channel affine map, (y - mean) * s + beta with
  s = 1/sqrt(var + eps), applied to a linear convolution y, so it folds into the
  kernel (each output channel scaled by s) and a conv bias. Computed in float64, the
  folded network differs from the unfolded one by float32 rounding only.
  """
  params = {}
  for key, layer in variables["params"].items():
    stats = variables["batch_stats"][key]["bn"]
    scale_C = 1 / np.sqrt(np.asarray(stats["var"], np.float64) + BATCH_NORM_EPSILON)
    kernel = np.asarray(layer["conv"]["kernel"], np.float64) * scale_C
    bias_C = np.asarray(layer["bn"]["bias"], np.float64) - stats["mean"] * scale_C
    params[key] = {"conv": {"kernel": kernel.astype(np.float32),
                            "bias": bias_C.astype(np.float32)}}
  return {"params": params}


def _variable_shapes() -> dict:
  """Shapes of InceptionV3's variables, from tracing only (no compute)."""
  # 75x75 is the smallest input the network accepts; variable shapes do not depend on it.
  dummy_1xSxSx3 = jax.ShapeDtypeStruct((1, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3().init, jax.random.key(0), dummy_1xSxSx3)


def random_variables(seed: int) -> dict:
  """Seeded random-init variables, initialised like Keras' `weights=None`.

  Kernels glorot-uniform, BN beta 0, moving mean 0, moving variance 1: the
  distribution `InceptionV3().init` draws from, sampled on the host because compiling
  init's 94 RNG kernels takes ~25 s on 2 CPU cores.
  """
  rng = np.random.default_rng(seed)
  params, batch_stats = {}, {}
  for key, layer in _variable_shapes()["params"].items():
    kh, kw, c_in, c_out = layer["conv"]["kernel"].shape
    limit = np.sqrt(6 / (kh * kw * (c_in + c_out)))
    kernel = rng.uniform(-limit, limit, (kh, kw, c_in, c_out)).astype(np.float32)
    params[key] = {"conv": {"kernel": kernel}, "bn": {"bias": np.zeros(c_out, np.float32)}}
    batch_stats[key] = {"bn": {"mean": np.zeros(c_out, np.float32),
                               "var": np.ones(c_out, np.float32)}}
  return {"params": params, "batch_stats": batch_stats}


def _read_string_list(group: h5py.Group, name: str) -> list[str]:
  # The legacy writer splits attributes over 64 kB into name0, name1, ...
  if name in group.attrs:
    chunks = [group.attrs[name]]
  else:
    chunks = []
    while f"{name}{len(chunks)}" in group.attrs:
      chunks.append(group.attrs[f"{name}{len(chunks)}"])
  return [s.decode("utf8") if isinstance(s, bytes) else str(s)
          for chunk in chunks for s in chunk]


def _construction_index(layer_name: str) -> int:
  # Keras names layers <prefix>, <prefix>_1, <prefix>_2, ... (Keras 2 starts at _1)
  # from a counter bumped at construction, so the suffix orders layers by creation
  # whatever the counter's offset. The file's own layer list is in graph-depth order,
  # which interleaves the branches of each Inception block.
  base, _, suffix = layer_name.rpartition("_")
  return int(suffix) if base and suffix.isdigit() else 0


def _leaf_name(weight_name: str) -> str:
  # 'conv2d_1/kernel:0' (Keras 2) or 'conv2d/kernel' (Keras 3) -> 'kernel'.
  return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_conv_and_bn_layers(path: str) -> tuple[list, list]:
  """(name, {leaf name: array}) of the conv and the BN layers, in creation order."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(
        f"{path} is not an HDF5 file ({e}). Pass the Keras Inception-V3 weights file "
        f"from {WEIGHTS_URL}, or no file to use random-init features.") from None
  with f:
    # Whole-model files saved by Keras 2 keep the same layout under 'model_weights'.
    root = f["model_weights"] if "model_weights" in f else f
    layer_names = _read_string_list(root, "layer_names")
    if not layer_names:
      raise ValueError(
          f"{path} is an HDF5 file but not in the legacy Keras weights format (no "
          "'layer_names' attribute). Use the Keras ImageNet file "
          f"{WEIGHTS_URL} or one written by Keras' legacy "
          "save_weights_to_hdf5_group; Keras 3 '.weights.h5' files are not supported.")
    convs, bns = [], []
    for layer_name in layer_names:
      group = root[layer_name]
      weights = {_leaf_name(w): np.asarray(group[w], np.float32)
                 for w in _read_string_list(group, "weight_names")}
      if weights.keys() == {"kernel"} and weights["kernel"].ndim == 4:
        convs.append((layer_name, weights))
      elif weights.keys() == {"beta", "moving_mean", "moving_variance"}:
        bns.append((layer_name, weights))
  for layers in (convs, bns):
    layers.sort(key=lambda layer: _construction_index(layer[0]))
    order = [_construction_index(name) for name, _ in layers]
    if len(set(order)) != len(order):
      raise ValueError(
          f"Cannot recover the layer construction order from the layer names in {path} "
          f"({[name for name, _ in layers][:5]}...): Keras' automatic names "
          "<prefix>_<counter> are needed. Save the model with default layer names.")
  return convs, bns


def load_keras_weights(path: str | os.PathLike) -> dict:
  """Flax variables {'params', 'batch_stats'} from a legacy Keras HDF5 weights file.

  The i-th convolution and the i-th batch norm the Keras model created go to
  `ConvBN_<i>`; every array's shape is checked against `InceptionV3`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Inception-V3 weights file {path} not found. Download "
        f"{WEIGHTS_URL} to that path, or pass no file to use random-init features.")
  convs, bns = _read_conv_and_bn_layers(path)
  shapes = _variable_shapes()
  n_layers = len(shapes["params"])
  if len(convs) != n_layers or len(bns) != n_layers:
    raise ValueError(
        f"{path} has {len(convs)} convolution and {len(bns)} batch-norm layers; "
        f"Keras' InceptionV3 has {n_layers} of each. Is it the Inception-V3 weights "
        f"file ({WEIGHTS_URL})?")
  params, batch_stats = {}, {}
  for i, ((conv_name, conv), (bn_name, bn)) in enumerate(zip(convs, bns)):
    key = f"ConvBN_{i}"
    arrays = {("params", "conv", "kernel"): (conv_name, conv["kernel"]),
              ("params", "bn", "bias"): (bn_name, bn["beta"]),
              ("batch_stats", "bn", "mean"): (bn_name, bn["moving_mean"]),
              ("batch_stats", "bn", "var"): (bn_name, bn["moving_variance"])}
    for (collection, module, leaf), (layer_name, array) in arrays.items():
      expected = shapes[collection][key][module][leaf].shape
      if array.shape != expected:
        raise ValueError(
            f"{path}: layer {layer_name} ({leaf}) has shape {array.shape}, but layer "
            f"{i} of Keras' InceptionV3 needs {expected}. The file is not the "
            f"Inception-V3 notop weights ({WEIGHTS_URL}).")
    params[key] = {"conv": {"kernel": conv["kernel"]}, "bn": {"bias": bn["beta"]}}
    batch_stats[key] = {"bn": {"mean": bn["moving_mean"], "var": bn["moving_variance"]}}
  return {"params": params, "batch_stats": batch_stats}


def keras_inception_v3(variables: dict):
  """`keras.applications.InceptionV3(include_top=False, pooling='avg')` carrying `variables`.

  The inverse of `load_keras_weights`: `ConvBN_<i>` goes to the i-th convolution and
  the i-th batch norm the Keras model creates. Any input size from 75x75 up.
  """
  import keras  # pylint: disable=g-import-not-at-top  (TensorFlow; only this path needs it)
  model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                         input_shape=(None, None, 3))
  # Keras' automatic names number the layers in creation order (_construction_index).
  convs, bns = ([layer for layer in model.layers if isinstance(layer, kind)]
                for kind in (keras.layers.Conv2D, keras.layers.BatchNormalization))
  creation_order = lambda layer: _construction_index(layer.name)
  for i, (conv, bn) in enumerate(zip(sorted(convs, key=creation_order),
                                     sorted(bns, key=creation_order))):
    layer, stats = variables["params"][f"ConvBN_{i}"], variables["batch_stats"][f"ConvBN_{i}"]
    conv.set_weights([layer["conv"]["kernel"]])
    bn.set_weights([layer["bn"]["bias"], stats["bn"]["mean"], stats["bn"]["var"]])
  return model


# XLA:CPU hands convolutions to YNNPACK by default; on this network that ran 1.3-1.9x
# slower end to end than XLA's own Eigen convolutions (the stem's 3x3 convolutions at
# 7-45 GFLOP/s). An empty YNNPACK fusion list sends them to Eigen.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def default_backend() -> str:
  """"flax" on accelerators; "keras" (TensorFlow's oneDNN convolutions) on CPU.

  On CPU, XLA's Eigen convolutions are the bottleneck: per layer at batch 64 they run
  1.2-1.3x slower than oneDNN's on the 17x17 and 8x8 grids and 1.4-3x slower on the
  stem (few channels, large grids), and this jaxlib has no oneDNN convolutions
  (`xla_cpu_experimental_onednn_custom_call` is a no-op in its build). Keras' own
  InceptionV3 on TensorFlow therefore runs the same network faster there.
  """
  if jax.default_backend() != "cpu":
    return "flax"
  import keras  # pylint: disable=g-import-not-at-top
  return "keras" if keras.backend.backend() == "tensorflow" else "flax"


class ImageEmbedder:
  """uint8 images -> Inception-V3 features, batched.

  `backend` "flax" runs `InceptionV3` jitted, batch norm folded, data-parallel over
  every local device; "keras" runs `keras_inception_v3` on TensorFlow's CPU kernels.
  Both give the same features to float32 rounding; `default_backend` picks.
  """
  dim = FEATURE_DIM

  def __init__(self, variables: dict, batch_size: int = 64, backend: str | None = None):
    self.batch_size = batch_size
    self.backend = backend or default_backend()
    if self.backend == "flax":
      self._embed_batch = _flax_batch_embedder(variables, batch_size)
    elif self.backend == "keras":
      self._embed_batch = _keras_batch_embedder(variables)
    else:
      raise ValueError(f"backend={self.backend!r}: use 'flax', 'keras' or None (default).")

  @classmethod
  def from_weights_file(cls, path: str | os.PathLike | None, seed: int = 0,
                        batch_size: int = 64) -> "ImageEmbedder":
    """Keras ImageNet weights from `path`; a seeded random-init network without them."""
    if path is not None and os.path.exists(path):
      return cls(load_keras_weights(path), batch_size)
    warnings.warn(
        f"Inception-V3 weights file {path} not found: image features come from a "
        f"random-init Inception-V3 (seed {seed}), not ImageNet weights. Download "
        f"{WEIGHTS_URL} for the paper's features.", stacklevel=2)
    return cls(random_variables(seed), batch_size)

  def __call__(self, images_NxHxWx3: np.ndarray) -> np.ndarray:
    """RGB images (uint8, or float 0..255) -> float32 Nx2048 features on the host."""
    images_NxHxWx3 = np.asarray(images_NxHxWx3)
    if (images_NxHxWx3.ndim != 4 or images_NxHxWx3.shape[-1] != 3
        or min(images_NxHxWx3.shape[1:3]) < MIN_IMAGE_SIDE):
      raise ValueError(
          f"Expected RGB images shaped NxHxWx3 with H, W >= {MIN_IMAGE_SIDE} (224x224 "
          f"for IMAC), got {images_NxHxWx3.shape}; stack the images along axis 0 and "
          "convert grey or RGBA images to RGB first.")
    feats = [self._embed_full_batch(images_NxHxWx3[start:start + self.batch_size])
             for start in range(0, len(images_NxHxWx3), self.batch_size)]
    if not feats:
      return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(jax.device_get(feats)).astype(np.float32, copy=False)

  def _embed_full_batch(self, images_BxHxWx3: np.ndarray):
    """A batch padded to `batch_size`: one compiled program, and an image's features do
    not depend on how many images share its batch (TensorFlow picks its convolution
    kernels by batch size), so a Beam build, whose batches differ, gives the same ones."""
    pad = self.batch_size - len(images_BxHxWx3)
    if pad:
      images_BxHxWx3 = np.concatenate(
          [images_BxHxWx3, np.zeros((pad, *images_BxHxWx3.shape[1:]), images_BxHxWx3.dtype)])
    return self._embed_batch(images_BxHxWx3)[:self.batch_size - pad]


def _flax_batch_embedder(variables: dict, batch_size: int) -> Callable:
  """Batch of batch_size uint8 images -> features (a device array, not waited for)."""
  devices = jax.devices()
  if batch_size % len(devices):
    raise ValueError(
        f"batch_size={batch_size} must be a multiple of the {len(devices)} devices "
        "it is split over; pick a multiple.")
  mesh = Mesh(np.asarray(devices), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  folded = jax.device_put(fold_batch_norm(variables), replicated)
  model = InceptionV3(folded_batch_norm=True)
  # uint8 crosses to the device (4x less traffic than float32); scaling happens there.
  embed = jax.jit(lambda v, images: model.apply(v, preprocess(images)),
                  in_shardings=(replicated, batch_sharding), out_shardings=batch_sharding,
                  compiler_options=(CPU_COMPILER_OPTIONS
                                    if devices[0].platform == "cpu" else None))

  # Asynchronous dispatch: the next batch is queued before this one reaches the host.
  return lambda images_BxHxWx3: embed(folded, jax.device_put(images_BxHxWx3, batch_sharding))


def _keras_batch_embedder(variables: dict) -> Callable:
  """Batch of uint8 images -> features, by Keras' InceptionV3 on TensorFlow."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = keras_inception_v3(variables)

  # One graph per input dtype, generalised over batch and image sizes; scaled inside.
  @tf.function(reduce_retracing=True)
  def embed(images_BxHxWx3):
    x = keras.applications.inception_v3.preprocess_input(tf.cast(images_BxHxWx3, tf.float32))
    return model(x, training=False)

  return lambda images_BxHxWx3: embed(images_BxHxWx3).numpy()
