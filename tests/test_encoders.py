"""Frozen encoders: CLIP / SigLIP (keras-hub) and CLAP (transformers) on saved random
copies in the real weights' format: parity with the libraries' own paths, batching,
pooling and padding rules, segment counts, and the errors a user meets first."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import soundfile as sf

import optional
from acp_jax.features import clap
from acp_jax.features import clip
from acp_jax.features import music

# Embeddings are L2-normalised (entries ~1/sqrt(dim) ~ 0.2), so this bar is about 5e-4
# relative to an entry.
PARITY_TOLERANCE = 1e-4
TEN_SECONDS = music.DescriptorConfig(segment_seconds=10.0)  # songs cut in 10 s segments
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
KERAS_HUB_INSTALL = clip.INSTALL
CLAP_INSTALL = clap.INSTALL

# ---------------------------------------------------------------------------------------
# CLIP / SigLIP. Keras picks its backend once per process, so the towers run in a fresh
# process on each backend they support.

_VISION_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from acp_jax.features import clip
    work, backend = sys.argv[1:]
    for name in clip.ENCODERS:
      # The same seeded weights on either backend (saved once per backend).
      weights = clip.save_random_weights(name, os.path.join(work, backend, name))
      rng = np.random.default_rng(0)
      out = {}
      embedder = clip.VisionEmbedder(name, weights, batch_size=2)
      assert embedder.backend == backend
      backbone, converter = clip.load_preset(name, weights)
      tower = clip.vision_tower(backbone)
      out["dim"], out["image_size"] = embedder.dim, embedder.image_size
      # At the tower's own size, and larger and not square (resized, CLIP crops).
      for key, shape in (("native", (3, 32, 32, 3)), ("resized", (3, 40, 56, 3))):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        out[key] = embedder(images)
        out[key + "_alone"] = np.concatenate([embedder(image[None]) for image in images])
        out[key + "_reference"] = clip.reference_embed(tower, converter, images, 3)
      np.savez(os.path.join(work, backend, name + ".npz"), **out)
""")


@pytest.fixture(scope="module", params=clip.BACKENDS)
def vision_work(request, tmp_path_factory):
  """A directory <backend>/ with each encoder's saved random preset and, from a child
  process on that Keras backend, its embeddings (<name>.npz)."""
  if importlib.util.find_spec("keras_hub") is None:  # importing it here would fix keras'
    optional.module("keras_hub", KERAS_HUB_INSTALL)   # backend in this process: skip/fail
  work = tmp_path_factory.mktemp("vision")
  env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
  if request.param != "jax":  # the module's own choice in a fresh process
    env["KERAS_BACKEND"] = request.param
  # XLA's CPU optimisations cost the tiny towers ~8 s of compiling per preset (mostly
  # random initialisers) and gain nothing at this size; both paths compile alike.
  env.update(JAX_PLATFORMS="cpu",
             XLA_FLAGS=("--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true"),
             PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  subprocess.run([sys.executable, "-c", _VISION_CHILD, str(work), request.param], env=env,
                 check=True, timeout=300)
  return work / request.param


@pytest.fixture(params=sorted(clip.ENCODERS))
def vision(request, vision_work):
  """(name, saved random preset dir, its embeddings from the child process)."""
  name = request.param
  return name, vision_work / name, dict(np.load(vision_work / f"{name}.npz"))


def test_vision_saved_preset_is_the_real_format(vision):
  name, weights, _ = vision
  assert set(clip.WEIGHTS_FILES) <= {p.name for p in weights.iterdir()}
  config = json.loads((weights / "config.json").read_text())
  assert config["registered_name"] == clip.ENCODERS[name].backbone_class
  assert clip.check_weights_dir(name, weights) == weights


def test_vision_matches_keras_hub_reference(vision):
  name, _, out = vision
  for key in ("native", "resized"):
    assert out[key].shape == (3, out["dim"]) and out[key].dtype == np.float32
    error = np.abs(out[key] - out[key + "_reference"]).max()
    print(f"{name} {key}: max |ours - keras-hub predict| = {error:.2g}")
    assert error <= PARITY_TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(out[key], axis=1), 1, atol=1e-5)
  # The resize path is taken: other pixels give other embeddings.
  assert np.abs(out["native"] - out["resized"]).max() > 0.1


def test_vision_batching_does_not_change_an_embedding(vision):
  _, _, out = vision
  for key in ("native", "resized"):
    np.testing.assert_allclose(out[key + "_alone"], out[key], atol=1e-6)


def test_vision_errors_name_the_path_and_files(vision, tmp_path, monkeypatch):
  name, weights, _ = vision
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'}.*config.json"):
    clip.check_weights_dir(name, tmp_path / "absent")
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "config.json").write_bytes((weights / "config.json").read_bytes())
  with pytest.raises(FileNotFoundError, match="lacks model.weights.h5, image_converter.json"):
    clip.check_weights_dir(name, partial)
  other = "siglip" if name == "clip" else "clip"
  with pytest.raises(ValueError, match=f"not {clip.ENCODERS[other].preset}"):
    clip.check_weights_dir(other, weights)
  with pytest.raises(ValueError, match="Unknown image encoder"):
    clip.check_weights_dir("dino", weights)
  monkeypatch.setitem(sys.modules, "keras_hub", None)
  with pytest.raises(ImportError, match=r"pip install -e \.\[clip\]"):
    clip.check_weights_dir(name, weights)


def test_vision_refuses_another_keras_backend(vision, monkeypatch):
  name, weights, _ = vision
  torch_keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "torch"))
  monkeypatch.setitem(sys.modules, "keras", torch_keras)
  with pytest.raises(RuntimeError, match="KERAS_BACKEND=jax"):
    clip.VisionEmbedder(name, weights)


# ---------------------------------------------------------------------------------------
# CLAP, in this process (PyTorch).

WINDOW = round(clap.WINDOW_SECONDS * clap.SAMPLE_RATE)


@pytest.fixture(scope="module")
def clap_weights(tmp_path_factory):
  optional.module("transformers", CLAP_INSTALL)
  return clap.save_random_weights(tmp_path_factory.mktemp("clap") / "larger_clap_music")


@pytest.fixture(scope="module")
def clap_embedder(clap_weights):
  return clap.ClapEmbedder(clap_weights, batch_size=3)


def _noise(*shape: int, seed: int = 0) -> np.ndarray:
  return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_clap_saved_checkpoint_is_the_real_format(clap_weights):
  assert set(clap.WEIGHTS_FILES) <= {p.name for p in clap_weights.iterdir()}
  assert not list(clap_weights.glob("*.bin"))
  assert json.loads((clap_weights / "config.json").read_text())["model_type"] == "clap"


def test_clap_matches_transformers_reference(clap_weights, clap_embedder):
  # 25 s segments: two windows each and a 5 s tail; 3 s segments: one padded window.
  reference = clap.load_reference(clap_weights)
  for segments_SxT in (_noise(2, 25 * clap.SAMPLE_RATE), _noise(2, 3 * clap.SAMPLE_RATE + 17)):
    feat_SxD = clap_embedder.embed_segments(segments_SxT)
    assert feat_SxD.shape == (2, clap_embedder.dim) and feat_SxD.dtype == np.float32
    error = np.abs(feat_SxD - clap.reference_embed(*reference, segments_SxT)).max()
    print(f"segments of {segments_SxT.shape[1]} samples: max |ours - transformers| = "
          f"{error:.2g}")
    assert error <= PARITY_TOLERANCE


def test_clap_segment_is_the_mean_of_its_windows_and_drops_the_tail(clap_embedder):
  segment_T = _noise(25 * clap.SAMPLE_RATE)
  window_1xD, window_2xD = (
      clap_embedder.embed_segments(segment_T[None, i * WINDOW:(i + 1) * WINDOW]) for i in range(2))
  np.testing.assert_allclose(np.linalg.norm(window_1xD), 1, atol=1e-5)
  np.testing.assert_allclose(clap_embedder.embed_segments(segment_T[None]),
                             (window_1xD + window_2xD) / 2, atol=1e-6)


def test_clap_short_segment_is_repeat_padded(clap_embedder):
  short_T = _noise(3 * clap.SAMPLE_RATE + 17)
  repeated = np.tile(short_T, WINDOW // len(short_T))  # whole copies, then zeros
  padded_T = np.pad(repeated, (0, WINDOW - len(repeated)))
  np.testing.assert_allclose(clap_embedder.embed_segments(short_T[None]),
                             clap_embedder.embed_segments(padded_T[None]), atol=1e-6)
  assert np.isfinite(clap_embedder.embed_segments(_noise(1, 5))).all()  # 5 samples
  assert clap_embedder.embed_segments(np.zeros((0, WINDOW))).shape == (0, clap_embedder.dim)


def test_clap_batching_does_not_change_an_embedding(clap_weights, clap_embedder):
  segments_SxT = _noise(3, 12 * clap.SAMPLE_RATE)  # 3 windows: one batch of 3
  together = clap_embedder.embed_segments(segments_SxT)
  one_by_one = clap.ClapEmbedder(clap_weights, batch_size=1)
  alone = np.concatenate([one_by_one.embed_segments(s[None]) for s in segments_SxT])
  np.testing.assert_allclose(alone, together, atol=1e-6)


def test_clap_errors_name_the_path_and_files(clap_weights, tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'}.*model.safetensors"):
    clap.check_weights_dir(tmp_path / "absent")
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  for name in ("config.json", "preprocessor_config.json"):
    (pickled / name).write_bytes((clap_weights / name).read_bytes())
  (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
  with pytest.raises(ValueError, match="pytorch_model.bin.*model.safetensors"):
    clap.ClapEmbedder(pickled)
  (pickled / "pytorch_model.bin").unlink()
  (pickled / "model.safetensors").write_bytes((clap_weights / "model.safetensors").read_bytes())
  (pickled / "preprocessor_config.json").unlink()
  with pytest.raises(FileNotFoundError, match=f"{pickled}.*lacks preprocessor_config.json"):
    clap.check_weights_dir(pickled)
  (pickled / "preprocessor_config.json").write_text("{}")
  (pickled / "config.json").write_text(json.dumps({"model_type": "clip"}))
  with pytest.raises(ValueError, match="'clip' checkpoint, not CLAP"):
    clap.check_weights_dir(pickled)
  monkeypatch.setitem(sys.modules, "transformers", None)
  with pytest.raises(ImportError, match=r"pip install -e \.\[clap\]"):
    clap.check_weights_dir(clap_weights)
  with pytest.raises(ImportError, match=r"pip install -e \.\[clap\]"):
    clap.ClapEmbedder(clap_weights)


class _Recorder:
  """An embedder stand-in: records the segments it is given, embeds them as zeros."""

  def embed_segments(self, segments_SxT: np.ndarray) -> np.ndarray:
    self.segments_SxT = segments_SxT
    return np.zeros((len(segments_SxT), 4), np.float32)


# File lengths around the end of a 10 s segment: at 44.1 kHz, 440,999 samples are one
# segment for the descriptor (its 22,050 Hz resampling rounds up) but under 10 s at 48 kHz.
@pytest.mark.parametrize("rate,samples", [
    (44100, 440_998), (44100, 440_999), (44100, 441_000), (44100, 2 * 441_000 - 1),
    (48000, 479_999), (48000, 480_000), (32000, 319_999), (22050, 441_000)])
def test_song_segments_match_the_descriptors(rate, samples, tmp_path):
  path = tmp_path / "song.wav"
  sf.write(path, _noise(samples), rate)
  cfg = TEN_SECONDS
  try:
    expected = len(music.segment(music.load_audio(path, cfg.sample_rate), cfg))
  except music.AudioError as e:
    with pytest.raises(music.AudioError) as raised:
      clap.song_embeddings(path, TEN_SECONDS, _Recorder())
    assert raised.value.reason == e.reason
    return
  recorder = _Recorder()
  assert clap.song_embeddings(path, TEN_SECONDS, recorder).shape == (expected, 4)
  assert recorder.segments_SxT.shape == (expected, WINDOW)


def test_song_embeddings_end_to_end_and_unusable_audio(clap_embedder, tmp_path):
  song = tmp_path / "song.wav"
  sf.write(song, _noise(23 * 44100), 44100)
  feat_SxD = clap.song_embeddings(song, TEN_SECONDS, clap_embedder)
  assert feat_SxD.shape == (2, clap_embedder.dim) and np.isfinite(feat_SxD).all()
  silent = tmp_path / "silent.wav"
  sf.write(silent, np.zeros(11 * 44100, np.float32), 44100)
  with pytest.raises(music.AudioError, match="near-silent") as e:
    clap.song_embeddings(silent, TEN_SECONDS, clap_embedder)
  assert e.value.reason == "silent"
