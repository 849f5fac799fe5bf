"""The real train_and_evaluate on fake splits: outputs, resume, seeds, NaN, recompiles."""

import dataclasses
import json

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import fakes
from acp_jax import UserError
from acp_jax import checkpoint
from acp_jax import evaluate
from acp_jax import generated
from acp_jax import report
from acp_jax import train
from acp_jax.evaluators import retrieval


@pytest.fixture(scope="module")
def splits():
  return generated.make_splits()


def _rows(workdir, key):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [row for row in rows if key in row]


def test_outputs_and_best_checkpoint(tmp_path, splits):
  config = fakes.small_config()
  results = train.train_and_evaluate(config, str(tmp_path), splits=splits)

  assert results == json.loads((tmp_path / "results.json").read_text())
  for key in ("test_accuracy", "test_auc", "val_accuracy"):
    assert 0 <= results[key] <= 1
  assert results["steps"] == 22 and 0 < results["best_step"] <= 22
  assert results["pairs_per_second"] > 0
  assert results["pairs_per_second_all_seeds"] == results["pairs_per_second"]
  assert results["oracle_accuracy"] == splits["test"].oracle_accuracy
  assert results["test_pairs"] == 200 and results["validation_pairs"] == 100
  assert results["pair_fingerprint"] == {name: s.fingerprint for name, s in splits.items()}
  assert "per_seed" not in results and "test_accuracy_std" not in results
  # One seed: a bootstrap interval over the test pairs.
  low, high = results["test_accuracy_ci95"]
  assert low < results["test_accuracy"] < high and 0.05 < high - low < 0.2
  assert "bootstrap over the 200 test pairs" in results["interval"]
  assert [r["step"] for r in _rows(tmp_path, "train_loss")] == [4, 8, 12, 16, 20, 22]
  assert [r["step"] for r in _rows(tmp_path, "val_accuracy")] == [6, 12, 18, 22]
  assert max(r["val_accuracy"] for r in _rows(tmp_path, "val_accuracy")) == results["val_accuracy"]
  assert list(tmp_path.glob("events.out.tfevents.*"))
  # Where the time went: the run's phases, then each evaluator's and the report's.
  assert list(results["phases_s"]) == ["data", "compile", "train", "pairs", "retrieval",
                                       "figures", "report"]
  assert all(seconds > 0 for seconds in results["phases_s"].values())

  # What the evaluate and retrieve jobs restore reproduces the reported test accuracy.
  best = checkpoint.load_best(tmp_path)
  assert best.config.to_json() == config.to_json()
  assert best.step_S.tolist() == [results["best_step"]]
  assert best.val_accuracy_S.tolist() == pytest.approx([results["val_accuracy"]])
  restored = evaluate.restore(tmp_path, splits=splits)
  test = restored.pair_metrics("test")
  assert float(test["accuracy"][0]) == pytest.approx(results["test_accuracy"])
  # Retrieval on a sample of the queries: as many as asked, ranking every key.
  options = config.evals.retrieval.copy_and_resolve_references()
  options.max_queries = 7
  sampled = retrieval.Evaluator(options).run(restored).results["retrieval"]
  assert [sampled[d]["queries"] for d in ("music_to_image", "image_to_music")] == [7, 7]
  assert sampled["image_to_music"]["chance"] == pytest.approx(
      results["retrieval"]["image_to_music"]["chance"])  # a class's chance is the keys'


def test_rerun_resumes_instead_of_retraining(tmp_path, splits):
  config = fakes.small_config(patience=100)
  first = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  rows = (tmp_path / "metrics.jsonl").read_text()
  again = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  assert again["pairs_per_second"] is None  # nothing left to train
  timing = {"pairs_per_second": 0, "pairs_per_second_all_seeds": 0, "phases_s": 0}
  assert {**again, **timing} == {**first, **timing}
  assert (tmp_path / "metrics.jsonl").read_text() == rows
  # A longer budget continues from the last step.
  config.num_epochs = 2
  longer = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  assert longer["steps"] == 44
  steps = [r["step"] for r in _rows(tmp_path, "train_loss")]
  assert steps == sorted(set(steps)) and steps[-1] == 44


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, splits, monkeypatch):
  config = fakes.small_config(num_epochs=2, patience=100, log_every_steps=10)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"), splits=splits)

  save = checkpoint.Checkpoints.save

  def save_then_stop(self, step, *args):
    save(self, step, *args)
    if step == 24:  # mid-way through a log window (rows at 10, 20, 30)
      raise KeyboardInterrupt

  monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / "parts"), splits=splits)
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / "parts"), splits=splits)

  timing = {"pairs_per_second": 0, "pairs_per_second_all_seeds": 0, "phases_s": 0}
  assert {**resumed, **timing} == {**whole, **timing}
  without_timing = lambda workdir: [{k: v for k, v in row.items() if k != "pairs_per_second"}
                                    for row in _rows(workdir, "step")]
  assert without_timing(tmp_path / "parts") == without_timing(tmp_path / "whole")


def test_resume_refuses_every_field_that_changes_the_result(tmp_path, splits):
  train.train_and_evaluate(fakes.small_config(), str(tmp_path), splits=splits)
  saved = (tmp_path / "config.json").read_text()
  changed = fakes.small_config(seed=1, learning_rate=0.01, fusion_widths=(8, 8, 8))
  changed.evals.pairs.bootstrap_resamples = 10  # the closing evaluation's: may differ
  with pytest.raises(UserError, match=r"other fusion_widths, learning_rate, seed \(fusion_widths: "
                     r"\[16, 8, 8\] there, \[8, 8, 8\] here; learning_rate: 0.001 there, 0.01 "
                     r"here; seed: 0 there, 1 here\).*new --workdir"):
    train.train_and_evaluate(changed, str(tmp_path), splits=splits)
  assert (tmp_path / "config.json").read_text() == saved
  # Cadences, the report and the data's location cannot change the result.
  free = fakes.small_config(log_every_steps=8, checkpoint_every_epochs=1.0, data_dir="/elsewhere")
  free.evals.figures.map_points = 10
  results = train.train_and_evaluate(free, str(tmp_path), splits=splits)
  assert json.loads((tmp_path / "config.json").read_text())["log_every_steps"] == 8
  # A run saved before config.objective existed is ACP-Net's: it restores and resumes.
  old = json.loads((tmp_path / "config.json").read_text())
  del old["objective"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  restored = evaluate.restore(tmp_path, splits=splits)
  assert restored.config.objective == "correspondence"
  assert float(restored.pair_metrics("test")["accuracy"][0]) == results["test_accuracy"]
  train.train_and_evaluate(free, str(tmp_path), splits=splits)


def test_seeds_train_at_once(tmp_path, splits):
  config = fakes.small_config(num_seeds=2, seed=3)
  results = train.train_and_evaluate(config, str(tmp_path / "two"), splits=splits)
  assert len(results["per_seed"]) == 2
  for key in ("test_accuracy", "test_auc", "val_accuracy", "best_step"):
    values = [row[key] for row in results["per_seed"]]
    assert results[key] == pytest.approx(np.mean(values))
    assert results[f"{key}_std"] == pytest.approx(np.std(values, ddof=1))
  # 95% t interval of the mean of 2 seeds: mean ± 12.71 std / sqrt(2).
  half = 12.706 * results["test_accuracy_std"] / np.sqrt(2)
  assert results["test_accuracy_ci95"] == pytest.approx(
      [results["test_accuracy"] - half, results["test_accuracy"] + half], abs=1e-4)
  assert results["interval"].startswith("95% t interval of the mean over 2 seeds")
  assert results["num_seeds"] == 2 and results["oracle_accuracy"] > 0.5
  assert results["pairs_per_second_all_seeds"] == pytest.approx(2 * results["pairs_per_second"])
  # Seed s of a run is the run of seed + s.
  alone = train.train_and_evaluate(fakes.small_config(seed=4), str(tmp_path / "one"),
                                   splits=splits)
  for key in ("test_accuracy", "val_accuracy", "best_step"):
    assert results["per_seed"][1][key] == pytest.approx(alone[key], abs=1e-6)
  assert results["per_seed"][1]["test_auc"] == pytest.approx(alone["test_auc"], abs=1e-3)


def test_early_stopping_ends_the_run(tmp_path, splits):
  config = fakes.small_config(num_epochs=50, patience=1)
  results = train.train_and_evaluate(config, str(tmp_path), splits=splits)
  # The first evaluation sets the best; a second without improvement stops the run.
  assert results["steps"] < 50 * 22
  evals = _rows(tmp_path, "val_accuracy")
  assert evals[-1]["step"] == results["steps"]
  assert evals[-1]["val_accuracy"] <= results["val_accuracy"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, splits):
  train.train_and_evaluate(fakes.small_config(), str(tmp_path), splits=splits)
  # A longer budget on training features gone bad: the first new step's loss is NaN.
  train_split = splits["train"]
  bad = {**splits, "train": dataclasses.replace(train_split, images=dataclasses.replace(
      train_split.images, features_NxD=np.full_like(train_split.images.features_NxD, np.nan)))}
  with pytest.raises(UserError,
                     match=r"loss is nan at step 23 .*last good checkpoint is step 22"):
    train.train_and_evaluate(fakes.small_config(num_epochs=3), str(tmp_path), splits=bad)
  manager = checkpoint.Checkpoints(tmp_path)
  assert manager.latest_step() == 22
  params = manager.manager.restore(22, args=ocp.args.Composite(
      state=ocp.args.StandardRestore())).state["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  manager.close()
  assert all(np.isfinite(r["train_loss"]) for r in _rows(tmp_path, "train_loss"))


def test_nan_features_fail_at_the_first_step_without_saving(tmp_path, splits):
  features_NxD = splits["train"].images.features_NxD.copy()
  features_NxD[5, 7] = np.nan
  images = dataclasses.replace(splits["train"].images, features_NxD=features_NxD)
  broken = {**splits, "train": dataclasses.replace(splits["train"], images=images)}
  with pytest.raises(UserError, match="at step 1 .*check the input features"):
    train.train_and_evaluate(fakes.small_config(), str(tmp_path), splits=broken)
  assert not list((tmp_path / "checkpoints").iterdir())


def test_no_recompiles_as_training_goes_on(tmp_path, splits):
  lowerings = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, *_, **__: lowerings.append(event)
      if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None)
  counts = []
  for name, epochs in (("warm-up", 1), ("short", 1), ("long", 3)):
    lowerings.clear()
    train.train_and_evaluate(fakes.small_config(num_epochs=epochs), str(tmp_path / name),
                             splits=splits)
    counts.append(len(lowerings))
  # Three times the steps, evaluations and checkpoints, the same compilations.
  assert counts[1] == counts[2], counts


def test_summary_gives_the_ratio_to_the_oracle_and_the_paths():
  results = {"model": "acp", "dataset": "imac/synthetic", "test_accuracy": 0.8,
             "test_accuracy_std": 0.01, "test_auc": 0.9, "oracle_accuracy": 0.9}
  text = report.summary(results, epath.Path("/runs/a"))
  assert "test accuracy 0.800 ± 0.010, oracle 0.900: 0.89 x" in text
  results.update(test_accuracy_ci95=[0.7, 0.9], test_pairs=200)
  assert "0.800 ± 0.010 (95% CI 0.700-0.900) on 200 test pairs" in report.summary(
      results, epath.Path("/runs/a"))
  assert "/runs/a/results.json" in text and "/runs/a/report.md" in text
  del results["oracle_accuracy"]
  assert "oracle" not in report.summary(results, epath.Path("/runs/a"))
  assert text.startswith("acp on imac/synthetic")
  assert report.summary({**results, "objective": "supcon"}, epath.Path("/runs/a")).startswith(
      "acp+supcon on imac/synthetic")
  timed = report.summary({**results, "phases_s": {"train": 12.34, "figures": 0.5}},
                         epath.Path("/runs/a"))
  assert "time (s): train 12.3, figures 0.5" in timed


def test_a_degenerate_run_ends_in_a_report_that_says_so(tmp_path, splits):
  # Constant music features collapse the music tower (every embedding equal, where
  # t-SNE would crash the process); test pairs of one label leave AUC undefined.
  constant = {name: dataclasses.replace(split, music=dataclasses.replace(
      split.music, features_NxD=np.ones_like(split.music.features_NxD)))
      for name, split in splits.items()}
  test = constant["test"]
  true_P = test.pairs.labels_P == 1
  constant["test"] = dataclasses.replace(test, pairs=dataclasses.replace(
      test.pairs, image_P=test.pairs.image_P[true_P], music_P=test.pairs.music_P[true_P],
      labels_P=test.pairs.labels_P[true_P]))
  results = train.train_and_evaluate(fakes.small_config(), str(tmp_path), splits=constant)

  assert results["test_auc"] is None and results["test_pairs"] == 100
  notes = "\n".join(results["degenerate"])
  assert "Music tower embeddings (test): collapsed, all 1 distinct embedding among 40" in notes
  assert "the 100 test pairs are all true correspondences: AUC is undefined" in notes
  text = (tmp_path / "report.md").read_text()
  assert "## Degenerate run" in text and "collapsed" in text
  assert not (tmp_path / "figures" / "embedding_map_music.png").exists()
  assert (tmp_path / "figures" / "embedding_map_image.png").exists()
