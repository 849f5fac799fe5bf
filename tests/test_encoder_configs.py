"""The frozen-encoder configs of the imac builder, and what runs and reports do with them.

The encoders themselves (loading, parity with their libraries) are tested in
test_encoders.py; here: the builds, the pairs they share with the paper's features,
the checks of a restored run, and the comparison report.
"""

import dataclasses
import json
import re

from etils import epath
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from acp_jax import UserError
from acp_jax import checkpoint
from acp_jax import compare
from acp_jax import evaluate
from acp_jax import generated
from acp_jax import report
from acp_jax.features import clap
from acp_jax.features import clip
from acp_jax.features import media
import optional
from configs import acp
from configs import compare as compare_config
from tfds_imac import synthetic
from tfds_imac.imac import config
from tfds_imac.imac import imac_dataset_builder as imac
from tfds_imac.imac import weights

PAPER = {"image": "inception", "image_weights": "random(seed=0)", "music": "descriptor",
         "music_weights": None}
CLIP_CLAP = {"image": "clip", "image_weights": "clip_vit_base_patch32 sha256:0123456789ab",
             "music": "clap", "music_weights": "larger_clap_music sha256:ba9876543210"}


def _splits(encoders, fingerprint="f1"):
  return {name: dataclasses.replace(split, encoders=encoders, fingerprint=f"{fingerprint}-{name}")
          for name, split in generated.make_splits(seed=0).items()}


def test_a_restore_refuses_a_dataset_rebuilt_with_other_encoders_or_pairs(tmp_path):
  checkpoint.check_dataset(tmp_path, _splits(CLIP_CLAP), write=True)
  written = json.loads((tmp_path / "dataset.json").read_text())
  assert written["encoders"] == CLIP_CLAP and written["pair_fingerprint"]["test"] == "f1-test"
  checkpoint.check_dataset(tmp_path, _splits(CLIP_CLAP))  # the same dataset: fine
  other_weights = {**CLIP_CLAP, "image_weights": "clip_vit_base_patch32 sha256:ffffffffffff"}
  with pytest.raises(UserError, match=r"trained on features from image encoder clip "
                     r"\(clip_vit_base_patch32 sha256:0123456789ab\).*now holds features "
                     r"from image encoder clip \(clip_vit_base_patch32 sha256:ffffffffffff\)"):
    checkpoint.check_dataset(tmp_path, _splits(other_weights))
  with pytest.raises(UserError, match="image encoder inception"):
    checkpoint.check_dataset(tmp_path, _splits(PAPER), write=True)
  with pytest.raises(UserError, match="the train, validation, test pairs of the dataset"):
    checkpoint.check_dataset(tmp_path, _splits(CLIP_CLAP, fingerprint="f2"))
  # A run saved before dataset.json existed is not checked.
  checkpoint.check_dataset(tmp_path / "old_run", _splits(PAPER))
  assert not (tmp_path / "old_run").exists()


def _results(dataset, encoders, objective="correspondence", accuracy=0.7):
  return {"dataset": dataset, "encoders": encoders, "objective": objective,
          "test_accuracy": accuracy, "test_accuracy_std": 0.01, "test_pairs": 140,
          "pair_fingerprint": {"test": "abc"}}


def test_the_report_sets_features_side_by_side_on_the_same_pairs(tmp_path):
  clip_run = tmp_path / "clip_clap_supcon"
  clip_run.mkdir()
  (clip_run / "results.json").write_text(json.dumps(
      _results("imac/synthetic_clip_clap", CLIP_CLAP, "supcon", 0.75)))
  results = _results("imac/synthetic", PAPER)
  results["models"] = report.table4_rows(results, str(clip_run))
  assert set(results["models"]) == {"acp", "acp+supcon@clip+clap"}
  text = report.write_report(results, tmp_path, {}).read_text()
  assert ("| ACP-Net towers, SupCon (Emo-CLIM), CLIP ViT-B/32 + CLAP features | — | "
          "75.00 ± 1.00 | 140 |") in text
  assert "| ACP-Net (proposed) | 61.67 | 70.00 ± 1.00 | 140 |" in text
  assert "Frozen encoders on the generated corpus" in text
  # Real data: the same layout, without the warning.
  real = {**_results("imac/clip_clap", CLIP_CLAP), "inception_weights": None}
  assert "Frozen encoders" not in report.write_report(real, tmp_path, {}).read_text()
  # Other pairs are refused, whatever the features.
  (clip_run / "results.json").write_text(json.dumps(
      {**_results("imac/synthetic_clip_clap", CLIP_CLAP), "pair_fingerprint": {"test": "xyz"}}))
  with pytest.raises(UserError, match="a run on other fixed pairs"):
    report.table4_rows(results, str(clip_run))


@pytest.fixture(scope="module")
def encoder_root(tmp_path_factory):
  """Tiny random CLIP and CLAP weights, saved as the real ones come, in a weights root."""
  optional.module("keras_hub", clip.INSTALL)
  optional.module("transformers", clap.INSTALL)
  root = tmp_path_factory.mktemp("encoders")
  clip.save_random_weights("clip", root / weights.ENCODER_DIRS["clip"], seed=0)
  clap.save_random_weights(root / weights.ENCODER_DIRS["clap"], seed=0)
  return root


def _config(**kw):
  return config.ImacConfig(segment_seconds=2.0, window_seconds=1.0, hop_seconds=0.5,
                           synthetic=synthetic.CorpusConfig(num_images=45, num_songs=24,
                                                            song_seconds=4.5, seed=1), **kw)


def _build(data_dir, cfg):
  builder = imac.Builder(config=cfg, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def test_a_frozen_encoder_build_holds_the_paper_features_pairs(tmp_path, encoder_root,
                                                               monkeypatch):
  paper = _build(tmp_path, _config(name="tiny"))
  monkeypatch.setenv(weights.ENCODER_WEIGHTS_ENV, str(encoder_root))
  frozen = _build(tmp_path, _config(name="tiny_clip_clap", **config.CLIP_CLAP))
  meta = frozen.info.metadata
  assert meta["pair_fingerprint"] == paper.info.metadata["pair_fingerprint"]
  assert meta["counts"] == paper.info.metadata["counts"]
  assert meta["inception_weights"] is None
  assert meta["encoders"] == {
      "image": "clip", "music": "clap",
      "image_weights": weights.weights_label(encoder_root / "clip_vit_base_patch32"),
      "music_weights": weights.weights_label(encoder_root / "larger_clap_music")}
  assert meta["encoders"]["image_weights"].startswith("clip_vit_base_patch32 sha256:")

  # The stored features are the encoders' own on the corpus's files.
  test = tfds.as_numpy(frozen.as_dataset(split="test", batch_size=-1))
  corpus_dir, = (tmp_path / "downloads").glob("imac_synthetic_corpus_*")
  image_id = test["image"]["id"][0].decode()
  pixels, _ = media.load_image(corpus_dir / "images" / image_id, 224, 32)
  embedder = clip.VisionEmbedder("clip", encoder_root / "clip_vit_base_patch32", batch_size=8)
  np.testing.assert_allclose(test["image"]["features"][0], embedder(pixels[None])[0], atol=1e-5)
  segment_id = test["music"]["id"][0].decode()
  song_id, index = segment_id.split("#")
  song, = (corpus_dir / "music").glob(f"{song_id}.*")
  expected = clap.song_embeddings(song, frozen.builder_config.descriptor,
                                  clap.ClapEmbedder(encoder_root / "larger_clap_music"))
  np.testing.assert_allclose(test["music"]["features"][0], expected[int(index)], atol=1e-5)
  assert test["image"]["features"].shape[1] == embedder.dim


def test_a_frozen_encoder_build_without_weights_stops_before_any_item(tmp_path, monkeypatch):
  monkeypatch.delenv(weights.ENCODER_WEIGHTS_ENV, raising=False)
  cfg = _config(name="tiny_clip_clap", **config.CLIP_CLAP)
  with pytest.raises(FileNotFoundError, match=rf"\${weights.ENCODER_WEIGHTS_ENV}/"
                     "clip_vit_base_patch32 or <manual_dir>/encoders/clip_vit_base_patch32"):
    _build(tmp_path, cfg)
  empty = tmp_path / "weights"
  (empty / "clip_vit_base_patch32").mkdir(parents=True)
  monkeypatch.setenv(weights.ENCODER_WEIGHTS_ENV, str(empty))
  with pytest.raises(FileNotFoundError) as error:
    _build(tmp_path, cfg)
  for needed in (str(empty / "clip_vit_base_patch32"), "config.json", "model.weights.h5"):
    assert needed in str(error.value)
  assert not list((tmp_path / "downloads").glob("imac_synthetic_corpus_*"))  # nothing made


class EncoderImac(imac.Builder):
  """A tiny corpus in the paper's and the CLIP + CLAP features; registered for this test."""
  name = "imac_encoders_test"
  pkg_dir_path = epath.Path(imac.__file__).parent  # the real builder's README and citations
  DEFAULT_BUILDER_CONFIG_NAME = "synthetic"
  BUILDER_CONFIGS = [_config(name="synthetic"),
                     _config(name="synthetic_clip_clap", **config.CLIP_CLAP)]


def test_the_compare_config_is_the_grid_of_features_and_objectives():
  grid = compare_config.get_config("synthetic").runs
  assert list(grid) == [f"{f}_{o}" for f in ("paper", "clip_clap", "siglip_clap")
                        for o in ("supcon", "sigmoid", "correspondence")]
  assert grid.siglip_clap_sigmoid.dataset == "imac/synthetic_siglip_clap"
  assert grid.paper_correspondence.dataset == "imac/synthetic"
  assert grid.clip_clap_supcon.objective == "supcon"
  assert compare_config.get_config("clip_clap,sigmoid").runs.clip_clap_sigmoid.dataset == (
      "imac/clip_clap")
  with pytest.raises(UserError, match="unknown config argument"):
    compare_config.get_config("dino")


def test_the_compare_job_reports_both_features_on_the_same_pairs(tmp_path, encoder_root,
                                                                 monkeypatch):
  monkeypatch.setenv(weights.ENCODER_WEIGHTS_ENV, str(encoder_root))
  runs = ml_collections.ConfigDict(sort_keys=False)
  for features, dataset in (("paper", "synthetic"), ("clip_clap", "synthetic_clip_clap")):
    run = compare_config.run_config(features, "supcon", synthetic=True)
    run.update(dataset=f"{EncoderImac.name}/{dataset}", data_dir=str(tmp_path / "tfds"),
               batch_size=16, num_epochs=4, num_seeds=2, steps_per_dispatch=2,
               log_every_steps=4, eval_every_epochs=1.0, checkpoint_every_epochs=2.0)
    run.evals = acp.evals_config()
    del run.evals["figures"]
    runs[f"{features}_supcon"] = run
  joint = compare.run(ml_collections.ConfigDict({"job": "compare", "runs": runs}),
                      str(tmp_path / "compare"))
  assert set(joint["models"]) == {"acp+supcon", "acp+supcon@clip+clap"}
  clip_run = json.loads((tmp_path / "compare" / "clip_clap_supcon" / "results.json").read_text())
  assert clip_run["encoders"]["image"] == "clip" and clip_run["encoders"]["music"] == "clap"
  assert clip_run["pair_fingerprint"] == joint["pair_fingerprint"]
  text = (tmp_path / "compare" / "report.md").read_text()
  assert "| ACP-Net towers, SupCon (Emo-CLIM), CLIP ViT-B/32 + CLAP features | — | " in text
  assert "Frozen encoders on the generated corpus" in text
  page = (tmp_path / "compare" / "report.html").read_text()
  for source in re.findall(r' (?:src|href)="([^"#]+)"', page):  # the page's own files only
    assert (tmp_path / "compare" / source).is_file(), source
  # The run recorded its dataset; restoring it checks the encoders and pairs.
  recorded = json.loads((tmp_path / "compare" / "clip_clap_supcon" / "dataset.json").read_text())
  assert recorded["encoders"] == clip_run["encoders"]
  subject = evaluate.restore(tmp_path / "compare" / "clip_clap_supcon")
  assert subject.splits["test"].encoders == clip_run["encoders"]
