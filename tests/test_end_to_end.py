"""End to end on a small generated IMAC: train, evaluate with probes, retrieve by file, reports.

One test, in order, because each step needs the previous one's outputs and the
dataset build dominates the cost (~30 s on 2 cores).
"""

import json
import re
import shutil
import sys

from etils import epath
import numpy as np
from PIL import Image
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

import fakes
import launch
from acp_jax import UserError
from acp_jax import data
from acp_jax import evaluate
from acp_jax import query
from acp_jax import train
from configs import acp
from configs import probe as probe_config
from configs import retrieve as retrieve_config
from tfds_imac import synthetic
from tfds_imac.imac import config as imac_config
from tfds_imac.imac import imac_dataset_builder as imac


class TinyImac(imac.Builder):
  """`imac/synthetic` shrunk to build in seconds; registered for this test only."""
  name = "imac_end_to_end_test"
  pkg_dir_path = epath.Path(imac.__file__).parent  # the real builder's README and citations
  DEFAULT_BUILDER_CONFIG_NAME = "synthetic"
  BUILDER_CONFIGS = [imac_config.ImacConfig(
      name="synthetic", segment_seconds=2.0, window_seconds=1.0, hop_seconds=0.5, image_size=75,
      synthetic=synthetic.CorpusConfig(num_images=150, num_songs=96, song_seconds=4.5,
                                        label_noise=0.0, seed=5))]


DATASET = f"{TinyImac.name}/synthetic"
METRICS = {"p@1", "p@5", "p@10", "map", "mrr"}
FIGURES = {"learning_curves", "confusion_pairs", "embedding_map_image", "embedding_map_music",
           "gallery"}


def _check_report(out_dir: epath.Path, results: dict, figures: set[str]) -> None:
  assert json.loads((out_dir / "results.json").read_text()) == results
  for direction in ("music_to_image", "image_to_music"):
    metrics = results["retrieval"][direction]
    assert METRICS | {"chance"} <= set(metrics) and set(metrics["chance"]) == METRICS
    assert all(0 <= metrics[m] <= 1 and 0 < metrics["chance"][m] < 1 for m in METRICS)
    # The model ranks by what it learned: above chance (the tiny corpus's ~30 test
    # images and segments and 30 epochs of a tiny model leave a small margin above it).
    assert metrics["map"] > metrics["chance"]["map"] + 0.03, (direction, metrics)
  report = (out_dir / "report.md").read_text()
  assert "| ACP-Net (proposed) | 61.67 | " in report and "## Cross-modal retrieval" in report
  for name in figures:
    with Image.open(out_dir / "figures" / f"{name}.png") as png:
      assert min(png.size) > 200 and len(np.unique(np.asarray(png.convert("L")))) > 10, name
    assert f"(figures/{name}.png)" in report
  # The page plays the generated corpus: every item of the gallery has its medium.
  shown = [item for direction in ("music_to_image", "image_to_music")
           for row in results["gallery"][direction] for item in (row, *row["matches"])]
  assert results["gallery"]["notes"] == {} and all(item["file"] for item in shown)
  _check_page(out_dir)


def _check_page(out_dir: epath.Path) -> None:
  """report.html plays clips and shows images of its gallery, each a file of its folder."""
  sources = re.findall(r'<(audio|img)[^>]* src="([^"]+)"', (out_dir / "report.html").read_text())
  assert {tag for tag, source in sources if source.startswith("gallery/")} == {"audio", "img"}
  for _, source in sources:
    assert (out_dir / source).is_file(), source


def _query(checkpoint_dir, path, workdir, **overrides) -> dict:
  config = retrieve_config.get_config()
  config.update(dict(checkpoint_dir=str(checkpoint_dir), query=str(path), top_k=5, **overrides))
  return query.run(config, str(workdir))


def test_train_probe_retrieve(tmp_path, monkeypatch):
  data_dir = tmp_path / "tfds"
  run_dir = tmp_path / "run"

  # Train, with Table 5 at the end as the demo has it: the report of the best seed.
  config = fakes.small_config(dataset=DATASET, data_dir=str(data_dir), num_epochs=30, patience=1000,
                              num_seeds=2, eval_every_epochs=2.0, checkpoint_every_epochs=2.0)
  config.evals = acp.evals_config(probes=True)
  config.evals.probes.update(epochs=20, patience=10)
  results = train.train_and_evaluate(config, str(run_dir))
  probe_figures = {f"probe_{name}_{kind}" for name in ("image", "music")
                   for kind in ("curves", "confusion")}
  _check_report(run_dir, results, FIGURES | probe_figures)
  assert set(results["models"]) == {"acp"}
  assert results["analysed_model"].startswith(
      f"seed index {int(np.argmax([s['val_accuracy'] for s in results['per_seed']]))} of 2")
  fingerprint = tfds.builder(DATASET, data_dir=str(data_dir)).info.metadata.get("pair_fingerprint")
  assert results["pair_fingerprint"] == {name: (fingerprint or {}).get(name)
                                         for name in ("train", "validation", "test")}
  assert "| ACP-Net features + MLP | 40.4 | — |" not in (run_dir / "report.md").read_text()
  # A synthetic build's features come from the seeded random-init network, and say so.
  assert results["inception_weights"] == "random(seed=0)"
  assert "random-init Inception-V3 (random(seed=0))" in (run_dir / "report.md").read_text()

  # Evaluate again with the probes, with another run's row in Table 4: a run on the same
  # pairs only.
  other = tmp_path / "l3net_run"
  other.mkdir()
  other_results = {"model": "l3net", "test_accuracy": 0.5125, "dataset": DATASET,
                   "pair_fingerprint": results["pair_fingerprint"]}
  (other / "results.json").write_text(json.dumps(other_results))
  config = probe_config.get_config()
  config.checkpoint_dir = str(run_dir)
  config.report.compare = str(other)
  config.evals.probes.update(epochs=20, patience=10)
  probed = evaluate.run(config, str(tmp_path / "probe"))
  _check_report(tmp_path / "probe", probed, FIGURES | probe_figures)
  for name, num_classes in (("image", 8), ("music", 3)):
    result = probed["probe"][name]
    assert result["num_classes"] == num_classes and result["chance"] == 1 / num_classes
    assert 0 <= result["test_accuracy"] <= 1 and 1 <= result["best_epoch"] <= 20
  # The music embeddings carry the class: above chance. (The image probe's ~30 test
  # images of 8 emotions, drawn uniformly within a class here, are too few to tell.)
  music = probed["probe"]["music"]
  assert music["test_accuracy"] > music["chance"] + 0.1, {k: v for k, v in music.items() if k != "history"}
  # The restored checkpoint evaluates as the end of training did: the same evaluators on
  # the same seeds (macro figures are means over the seeds, per-class ones the best seed's).
  assert probed["retrieval"] == results["retrieval"]
  for key in ("test_accuracy", "test_accuracy_std", "test_auc", "per_seed", "analysed_model"):
    assert probed[key] == results[key], key
  for direction, metrics in results["retrieval"].items():
    assert set(metrics["per_class"]["p@1"]) != {None}, direction
  mismatched = {**other_results, "pair_fingerprint": {**results["pair_fingerprint"],
                                                      "test": "000000000000"}}
  (other / "results.json").write_text(json.dumps(mismatched))
  with pytest.raises(UserError, match="a run on other fixed pairs .*not comparable"):
    evaluate.run(config, str(tmp_path / "probe"))
  report = (tmp_path / "probe" / "report.md").read_text()
  assert "| L³-Net [13] | 57.17 | 51.25 |" in report
  image_accuracy = 100 * probed["probe"]["image"]["test_accuracy"]
  assert f"| ACP-Net features + MLP | 40.4 | {image_accuracy:.2f} |" in report

  # Queries are featurised as the builder featurised the dataset's items.
  splits = data.load_splits(DATASET, str(data_dir))
  corpus = imac.synthetic_corpus_dir(data_dir / "downloads", TinyImac.BUILDER_CONFIGS[0].synthetic)
  assert splits["test"].corpus_root == corpus  # the gallery's images and songs
  builder = tfds.builder(DATASET, data_dir=str(data_dir))
  test = splits["test"]
  song = test.music.ids[0].split("#")[0]
  song_path = next(corpus.glob(f"music/{song}.*"))
  modality, features_SxD = query.query_features(song_path, builder, None)
  stored = [test.music.ids.index(f"{song}#{s:03d}") for s in range(len(features_SxD))]
  assert modality == "music"
  np.testing.assert_allclose(features_SxD, test.music.features_NxD[stored], rtol=1e-4, atol=1e-4)
  image_path = corpus / "images" / test.images.ids[0]
  modality, features_1xD = query.query_features(image_path, builder, None)
  assert modality == "image"
  np.testing.assert_allclose(features_1xD[0], test.images.features_NxD[0], rtol=1e-3, atol=1e-3)

  # Retrieve: an audio file ranks images, an image file ranks music segments.
  num_images = sum(len(s.images.ids) for s in splits.values())
  num_segments = sum(len(s.music.ids) for s in splits.values())
  for path, modality, pool in ((song_path, "music", num_images),
                               (image_path, "image", num_segments)):
    found = _query(run_dir, path, tmp_path / "query")
    assert (found["modality"], found["pool_size"], len(found["matches"])) == (modality, pool, 5)
    scores = [m["score"] for m in found["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert json.loads((tmp_path / "query" / "matches.json").read_text()) == found
    _check_page(tmp_path / "query")  # the query and its matches
  test_only = _query(run_dir, song_path, tmp_path / "query", split="test")
  assert {m["split"] for m in test_only["matches"]} == {"test"}

  # Bad queries and mismatched checkpoints are errors that say what is wrong.
  (tmp_path / "notes.txt").write_text("hi")
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  sf.write(tmp_path / "short.wav", np.zeros(4000, np.float32), 22050)
  for path, error, message in (
      (tmp_path / "missing.wav", FileNotFoundError, "does not exist"),
      (tmp_path / "notes.txt", UserError, "unsupported file type '.txt'"),
      (tmp_path / "broken.jpg", UserError, "image query: unreadable image"),
      (tmp_path / "short.wav", UserError, "music query: .*shorter than one"),
  ):
    with pytest.raises(error, match=message):
      _query(run_dir, path, tmp_path / "query")
  argv = ["launch.py", f"--config={retrieve_config.__file__}", f"--config.checkpoint_dir={run_dir}",
          f"--config.query={tmp_path / 'notes.txt'}", f"--workdir={tmp_path / 'query'}"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  launch.FLAGS(argv)
  with pytest.raises(SystemExit, match="^error: .*unsupported file type"):
    launch.main(["launch.py"])

  edited = tmp_path / "edited_run"
  shutil.copytree(run_dir, edited)
  run_config = json.loads((edited / "config.json").read_text())
  (edited / "config.json").write_text(json.dumps({**run_config, "fusion_widths": [8, 8, 4]}))
  with pytest.raises(ValueError, match="does not match its config.json.*fusion_widths"):
    evaluate.restore(edited)
  with pytest.raises(ValueError, match=f"holds a run on {DATASET}, not imac/features"):
    evaluate.restore(run_dir, dataset="imac/features")
  with pytest.raises(ValueError, match="seed index 2 is out of range: the run trained 2 seed"):
    evaluate.restore(run_dir, seed=2)
