"""Inception-V3 embedders against Keras: weight loading, parity, batching, devices, errors."""

import os
import pathlib
import subprocess
import sys
import textwrap

import h5py
import jax
import numpy as np
import pytest

from acp_jax.features import inception

# Features of the weights below are O(1) (max ~2.8), so this bar is a relative one too.
PARITY_TOLERANCE = 1e-4
N_IMAGES = 3
BATCH_SIZE = 2  # smaller than N_IMAGES, so the last batch is partial
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Keras' TensorFlow backend calls np.array(x, copy=False)-style __array__ on every
# get/set_weights under numpy 2; hundreds of copies of that warning bury real ones.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _randomise_like_trained(model, rng: np.random.Generator) -> None:
  """Non-trivial BN statistics and He-scaled kernels, in place.

  Keras' `weights=None` init (beta 0, mean 0, var 1) would not catch BN arrays loaded
  into the wrong slot, and its glorot kernels shrink features to ~1e-3, where a 1e-4
  bar says little.
  """
  for layer in model.layers:
    weights = layer.get_weights()
    if len(weights) == 1 and weights[0].ndim == 4:  # Conv2D kernel
      fan_in = np.prod(weights[0].shape[:3])
      fan_out = np.prod(weights[0].shape[:2]) * weights[0].shape[3]
      layer.set_weights([weights[0] * np.sqrt((fan_in + fan_out) / fan_in)])
    elif len(weights) == 3:  # BatchNormalization beta, moving mean, moving variance
      shape = weights[0].shape
      layer.set_weights([rng.uniform(-0.2, 0.2, shape), rng.uniform(-0.2, 0.2, shape),
                         rng.uniform(0.5, 2.0, shape)])


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
  """(legacy .h5 weights path, uint8 images, Keras features) of one random Keras model."""
  keras = pytest.importorskip("keras")
  legacy_h5_format = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
  keras.backend.clear_session()  # layer names count from zero (conv2d_7 below), whatever ran before
  keras.utils.set_random_seed(0)
  model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                         input_shape=(224, 224, 3))
  rng = np.random.default_rng(0)
  _randomise_like_trained(model, rng)
  path = tmp_path_factory.mktemp("inception") / "weights.h5"
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  images_Nx224x224x3 = rng.integers(0, 256, (N_IMAGES, 224, 224, 3), dtype=np.uint8)
  x_Nx224x224x3 = keras.applications.inception_v3.preprocess_input(
      images_Nx224x224x3.astype(np.float32))
  return path, images_Nx224x224x3, model.predict(x_Nx224x224x3, verbose=0)


@pytest.fixture(scope="module", params=["flax", "keras"])
def embedded(request, keras_reference):
  """(embedder, its features of the reference images), once per backend."""
  path, images_Nx224x224x3, _ = keras_reference
  embedder = inception.ImageEmbedder(inception.load_keras_weights(path), BATCH_SIZE,
                                     backend=request.param)
  return embedder, embedder(images_Nx224x224x3)


def test_matches_keras(keras_reference, embedded):
  _, _, expected_Nx2048 = keras_reference
  embedder, feat_Nx2048 = embedded
  assert feat_Nx2048.shape == (N_IMAGES, inception.FEATURE_DIM)
  assert feat_Nx2048.dtype == np.float32
  error = np.abs(feat_Nx2048 - expected_Nx2048).max()
  print(f"max |{embedder.backend} - keras| = {error:.3g} "
        f"(feature max {np.abs(expected_Nx2048).max():.3g})")
  assert error < PARITY_TOLERANCE


def test_partial_batch_matches_full_batch(keras_reference, embedded):
  """Bit for bit: the Beam build batches images differently and must match (test_beam_build)."""
  _, images_Nx224x224x3, _ = keras_reference
  embedder, feat_Nx2048 = embedded
  np.testing.assert_array_equal(embedder(images_Nx224x224x3[-1:]), feat_Nx2048[-1:])
  np.testing.assert_array_equal(embedder(images_Nx224x224x3[::-1])[::-1], feat_Nx2048)
  assert embedder(images_Nx224x224x3[:0]).shape == (0, inception.FEATURE_DIM)


def _as_keras2_file(src: pathlib.Path, dst: pathlib.Path, rng: np.random.Generator) -> None:
  """Rewrites a Keras 3 legacy file the way Keras 2 names things, layers shuffled.

  Keras 2 (which wrote the ImageNet file) counts from conv2d_1 and suffixes ':0';
  shuffling the layer list checks that the loader does not rely on its order.
  """
  def keras2_name(name: str) -> str:
    if not name.startswith(("conv2d", "batch_normalization")):
      return name
    base, _, suffix = name.rpartition("_")
    return f"{base}_{int(suffix) + 1}" if base and suffix.isdigit() else f"{name}_1"

  def strings(attr) -> list[str]:
    return [a.decode() if isinstance(a, bytes) else str(a) for a in attr]

  with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
    names = strings(s.attrs["layer_names"])
    d.attrs["layer_names"] = [keras2_name(names[i]).encode() for i in rng.permutation(len(names))]
    for name in names:
      group = d.create_group(keras2_name(name))
      old = strings(s[name].attrs["weight_names"])
      new = [f"{keras2_name(name)}/{w.rsplit('/', 1)[-1]}:0" for w in old]
      group.attrs["weight_names"] = [w.encode() for w in new]
      for old_w, new_w in zip(old, new):
        group[new_w] = s[name][old_w][()]


def test_loads_keras2_naming_in_any_layer_order(keras_reference, tmp_path):
  path, _, _ = keras_reference
  keras2_path = tmp_path / "keras2.h5"
  _as_keras2_file(path, keras2_path, np.random.default_rng(1))
  expected = inception.load_keras_weights(path)
  loaded = inception.load_keras_weights(keras2_path)
  assert jax.tree.structure(loaded) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, loaded, expected)


def test_multi_device_matches_one_device(keras_reference, tmp_path):
  path, images_Nx224x224x3, _ = keras_reference
  feat_Nx2048 = inception.ImageEmbedder(inception.load_keras_weights(path), BATCH_SIZE,
                                        backend="flax")(images_Nx224x224x3)
  np.save(tmp_path / "images.npy", images_Nx224x224x3)
  script = textwrap.dedent(f"""
      import jax, numpy as np, pytest
      from acp_jax.features import inception
      assert len(jax.devices()) == 2, jax.devices()
      variables = inception.load_keras_weights({str(path)!r})
      with pytest.raises(ValueError, match="multiple of the 2 devices"):
        inception.ImageEmbedder(variables, batch_size=3, backend="flax")
      embedder = inception.ImageEmbedder(variables, batch_size={BATCH_SIZE}, backend="flax")
      np.save({str(tmp_path / "feats.npy")!r},
              embedder(np.load({str(tmp_path / "images.npy")!r})))
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
             XLA_FLAGS=(f"{os.environ.get('XLA_FLAGS', '')} "
                        "--xla_force_host_platform_device_count=2"))
  subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
  np.testing.assert_allclose(np.load(tmp_path / "feats.npy"), feat_Nx2048, atol=1e-6)


def test_random_variables_are_seeded_keras_init():
  variables = inception.random_variables(0)
  flax_init = jax.eval_shape(inception.InceptionV3().init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 75, 75, 3), np.float32))
  assert jax.tree.structure(variables) == jax.tree.structure(flax_init)
  for leaf, expected in zip(jax.tree.leaves(variables), jax.tree.leaves(flax_init)):
    assert (leaf.shape, leaf.dtype) == (expected.shape, expected.dtype)
  jax.tree.map(np.testing.assert_array_equal, variables, inception.random_variables(0))
  other = inception.random_variables(1)
  assert not np.array_equal(variables["params"]["ConvBN_0"]["conv"]["kernel"],
                            other["params"]["ConvBN_0"]["conv"]["kernel"])
  bn_stats = variables["batch_stats"]["ConvBN_5"]["bn"]
  np.testing.assert_array_equal(variables["params"]["ConvBN_5"]["bn"]["bias"], 0)
  np.testing.assert_array_equal(bn_stats["mean"], 0)
  np.testing.assert_array_equal(bn_stats["var"], 1)
  kernel = variables["params"]["ConvBN_93"]["conv"]["kernel"]  # 1x1, 2048 -> 192
  limit = np.sqrt(6 / (2048 + 192))  # glorot_uniform
  assert kernel.shape == (1, 1, 2048, 192)
  assert limit * 0.95 < np.abs(kernel).max() <= limit


@pytest.mark.parametrize("path", [None, "no/such/weights.h5"])
def test_from_weights_file_without_weights_warns(path):
  with pytest.warns(UserWarning, match="random-init Inception-V3"):
    embedder = inception.ImageEmbedder.from_weights_file(path, seed=0, batch_size=1)
  assert embedder.batch_size == 1


def test_backends_agree_on_random_init_features():
  """The dataset's random(seed=0) features do not depend on the backend that made them."""
  variables = inception.random_variables(0)
  images_Nx224x224x3 = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), np.uint8)
  flax_Nx2048, keras_Nx2048 = (
      inception.ImageEmbedder(variables, batch_size=2, backend=backend)(images_Nx224x224x3)
      for backend in ("flax", "keras"))
  np.testing.assert_allclose(keras_Nx2048, flax_Nx2048, rtol=0,
                             atol=1e-5 * np.abs(flax_Nx2048).max())


def test_default_backend_is_keras_on_cpu_flax_elsewhere():
  expected = "keras" if jax.default_backend() == "cpu" else "flax"
  assert inception.default_backend() == expected
  with pytest.raises(ValueError, match="backend='xla'"):
    inception.ImageEmbedder(inception.random_variables(0), batch_size=1, backend="xla")


def test_fold_batch_norm_is_conv_then_batch_norm():
  rng = np.random.default_rng(0)
  x_2x9x9x5 = rng.standard_normal((2, 9, 9, 5)).astype(np.float32)
  # 5 input and 4 output channels: a scale applied along the wrong kernel axis fails.
  layer = {"conv": {"kernel": rng.standard_normal((3, 3, 5, 4)).astype(np.float32)},
           "bn": {"bias": rng.uniform(-1, 1, 4).astype(np.float32)}}
  stats = {"bn": {"mean": rng.uniform(-1, 1, 4).astype(np.float32),
                  "var": rng.uniform(1e-3, 2, 4).astype(np.float32)}}
  folded = inception.fold_batch_norm({"params": {"ConvBN_0": layer},
                                      "batch_stats": {"ConvBN_0": stats}})
  expected = inception.ConvBN(4, (3, 3)).apply({"params": layer, "batch_stats": stats},
                                               x_2x9x9x5)
  got = inception.ConvBN(4, (3, 3), folded=True).apply(
      {"params": folded["params"]["ConvBN_0"]}, x_2x9x9x5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_cpu_convolutions_leave_ynnpack():
  """The CPU option still applies: without it, convolutions go to YNNPACK."""
  def compiled_conv(**jit_kwargs) -> str:
    # A new function each time: jit's cache would hand back the first compilation.
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # as nn.Conv
    shapes = (jax.ShapeDtypeStruct((1, 8, 8, 4), np.float32),
              jax.ShapeDtypeStruct((3, 3, 4, 32), np.float32))
    return jax.jit(conv, **jit_kwargs).lower(*shapes).compile().as_text()

  assert "ynn_fusion" in compiled_conv(), (
      "XLA:CPU no longer sends convolutions to YNNPACK: measure whether "
      "CPU_COMPILER_OPTIONS is still worth keeping (bench/features.py).")
  assert "ynn_fusion" not in compiled_conv(compiler_options=inception.CPU_COMPILER_OPTIONS)


def test_preprocess_is_keras_scaling():
  pixels = np.array([0, 127.5, 255], np.float32).reshape(1, 1, 3, 1)
  np.testing.assert_allclose(inception.preprocess(pixels).ravel(), [-1, 0, 1])
  assert inception.preprocess(np.zeros((1, 2, 2, 3), np.uint8)).dtype == np.float32


def test_bad_weight_files_say_what_is_wrong(keras_reference, tmp_path):
  path, _, _ = keras_reference
  with pytest.raises(FileNotFoundError, match="Download https://"):
    inception.load_keras_weights(tmp_path / "missing.h5")
  (tmp_path / "text.h5").write_text("not weights")
  with pytest.raises(ValueError, match="not an HDF5 file"):
    inception.load_keras_weights(tmp_path / "text.h5")
  with h5py.File(tmp_path / "empty.h5", "w"):
    pass
  with pytest.raises(ValueError, match="legacy Keras weights format"):
    inception.load_keras_weights(tmp_path / "empty.h5")
  wrong = tmp_path / "wrong_shape.h5"
  wrong.write_bytes(path.read_bytes())
  with h5py.File(wrong, "r+") as f:
    del f["conv2d_7/conv2d_7/kernel"]
    f["conv2d_7/conv2d_7/kernel"] = np.zeros((3, 3, 48, 64), np.float32)
  with pytest.raises(ValueError, match=r"conv2d_7 \(kernel\) has shape \(3, 3, 48, 64\)"):
    inception.load_keras_weights(wrong)


def test_bad_images_say_what_is_wrong(embedded):
  embedder, _ = embedded
  with pytest.raises(ValueError, match="NxHxWx3"):
    embedder(np.zeros((2, 224, 224), np.uint8))
  with pytest.raises(ValueError, match="NxHxWx3"):
    embedder(np.zeros((2, 32, 32, 3), np.uint8))
