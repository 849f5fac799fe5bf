"""The imac build as a Beam pipeline equals the in-process build."""

import os
import tempfile

from etils import epath
import jax
import numpy as np
from PIL import Image
import soundfile as sf
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from tfds_imac import synthetic
from tfds_imac.imac import config
from tfds_imac.imac import imac_dataset_builder as imac
from tfds_imac.imac import plan
from tfds_imac.imac import weights

# Each Beam worker compiles Inception-V3 again; a persistent cache, which the workers
# find through the environment, makes that a load (the same cache as tests/fakes.py).
_XLA_CACHE = os.path.join(tempfile.gettempdir(), "acp_jax_tests_xla_cache")
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _manual_dir(tmp_path):
  """A small generated corpus with items each build mode must skip, at scan or in a worker."""
  root = tmp_path / "manual"
  synthetic.write_corpus(root, synthetic.CorpusConfig(num_images=36, num_songs=18,
                                                      song_seconds=2.5, seed=5))
  good = next((root / "images" / "awe").glob("*.jpg")).read_bytes()
  (root / "images" / "awe" / "truncated.jpg").write_bytes(good[: len(good) // 3])
  Image.new("RGB", (8, 8)).save(root / "images" / "fear" / "tiny.png")
  (root / "images" / "fear" / "notes.txt").write_text("not an image")
  sf.write(root / "music" / "silent.wav", np.zeros(3 * 22050), 22050)
  (root / "music" / "orphan.wav").write_bytes((root / "music" / "silent.wav").read_bytes())
  with (root / "music.csv").open("a") as f:
    f.write("silent,a,t,1,0,0\nnofile,a,t,1,0,0\n")
  return root


def _build(data_dir, manual_dir, **download_kw):
  cfg = config.ImacConfig(name="tiny", segment_seconds=2.0, window_seconds=1.0, hop_seconds=0.5)
  builder = imac.Builder(config=cfg, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), **download_kw))
  return builder


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def _saved(builder):
  """What a build left on disk: its metadata and its skip report."""
  data_dir = epath.Path(builder.data_dir)
  return (tfds.builder_from_directory(data_dir).info.metadata,
          (data_dir / plan.SKIP_REPORT_FILE).read_text())


def test_beam_build_equals_in_process_build(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  monkeypatch.setenv(weights.RANDOM_INCEPTION_ENV, "1")
  manual = _manual_dir(tmp_path)
  local = _build(tmp_path / "local", manual)
  beam = _build(tmp_path / "beam", manual, beam_options=PipelineOptions(flags=[
      "--runner=DirectRunner", "--direct_num_workers=2",
      "--direct_running_mode=multi_processing"]))

  (meta, report), (local_meta, local_report) = _saved(beam), _saved(local)
  assert meta == local_meta
  assert report == local_report
  assert {"image: unreadable image", "image: image smaller than 32 px",
          "image: not an image file", "music: audio: silent",
          "music: audio file without a music.csv row",
          "music: music.csv row without an audio file"} <= set(meta["skipped"])
  assert (set(meta["oracle_accuracy"]) == set(meta["counts"]) == set(meta["pair_fingerprint"])
          == {"train", "validation", "test"})
  assert not list((tmp_path / "beam").rglob("imac_beam_build")), "Beam work files left behind"

  # Both writers order a split by a salted hash of the example keys, so equal example
  # sequences mean equal keys too.
  for split in ("train", "validation", "test"):
    want, got = _examples(local, split), _examples(beam, split)
    assert len(got) == len(want) == meta["counts"][split]["pairs"]
    for w, g in zip(want, got):
      for modality in ("image", "music"):
        for field, value in w[modality].items():
          np.testing.assert_array_equal(g[modality][field], value, err_msg=f"{split} {field}")
      assert g["label"] == w["label"]
