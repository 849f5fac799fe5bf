"""The documented build command, run as a new user types it: the installed `tfds` script,
outside the repository, without PYTHONPATH, on a small manual dir of generated files."""

import os
import pathlib
import subprocess
import sys

import tensorflow_datasets as tfds

import tfds_imac  # registers imac for tfds.load in this process
from tfds_imac import synthetic

# One 60 s segment per song (imac/features cuts songs as the paper does); 13 songs put
# at least one in each split.
_CORPUS = synthetic.CorpusConfig(num_images=30, num_songs=13, song_seconds=61.0, seed=1)


def test_tfds_build_imac_features_from_outside_the_repository(tmp_path):
  manual_dir, data_dir, cwd = tmp_path / "manual", tmp_path / "tfds", tmp_path / "elsewhere"
  cwd.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  # The script imports the installed project: it must be this checkout, not another one.
  where = "import importlib.util; print(importlib.util.find_spec('tfds_imac').origin)"
  installed = subprocess.run([sys.executable, "-c", where], cwd=cwd, env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
  assert installed == tfds_imac.__file__, (
      f"The environment's installed tfds_imac is {installed}, not this checkout's "
      f"{tfds_imac.__file__}: run `pip install -e {pathlib.Path(tfds_imac.__file__).parents[1]}`.")
  synthetic.write_corpus(manual_dir, _CORPUS)
  env["IMAC_RANDOM_INCEPTION"] = "1"  # no ImageNet weights in a test: the explicit opt-in
  tfds_script = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_script), "build", "--imports", "tfds_imac", "imac/features",
       f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

  builder = tfds.builder("imac/features", data_dir=str(data_dir))
  assert builder.is_prepared()
  metadata = builder.info.metadata
  assert metadata["inception_weights"] == "random(seed=0)"
  assert not metadata["skipped"]
  counts = metadata["counts"]
  assert sum(c["images"] for c in counts.values()) == _CORPUS.num_images
  assert sum(c["songs"] for c in counts.values()) == _CORPUS.num_songs
  for split, count in counts.items():
    examples = list(tfds.as_numpy(tfds.load("imac/features", split=split,
                                            data_dir=str(data_dir))))
    assert len(examples) == count["pairs"] > 0
    for example in examples:
      assert example["image"]["features"].shape == (2048,)
      assert example["music"]["features"].shape == (193,)
      assert (manual_dir / "images" / example["image"]["id"].decode()).is_file()
      assert example["music"]["id"].decode() == example["music"]["song_id"].decode() + "#000"
