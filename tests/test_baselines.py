"""The Table 4 baselines through the real train_and_evaluate on fake media: outputs, resume."""

import json

import jax
import numpy as np
import pytest

import fakes
from acp_jax import checkpoint
from acp_jax import feeds
from acp_jax import generated
from acp_jax import inputs
from acp_jax import models
from acp_jax import objectives
from acp_jax import train
from acp_jax.evaluators import common


@pytest.fixture(scope="module")
def splits():
  return fakes.with_media(generated.make_splits())


@pytest.mark.parametrize("model", ["l3net", "spectrogram_acp"])
def test_trains_and_restores(tmp_path, splits, model):
  config = fakes.small_media_config(model)
  results = train.train_and_evaluate(config, str(tmp_path), splits=splits)

  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["model"] == model and saved["dataset"] == "imac/synthetic_media"
  for key in ("test_accuracy", "test_auc", "val_accuracy"):
    assert 0 <= saved[key] <= 1 and saved[key] == results[key]
  assert saved["steps"] == 22 and saved["oracle_accuracy"] == splits["test"].oracle_accuracy

  # The best checkpoint carries the BatchNorm statistics and the standardisation of
  # the float inputs only; with them the media held in memory (the run streamed them)
  # reproduce the reported test accuracy.
  best = checkpoint.load_best(tmp_path)
  assert jax.tree.leaves(best.batch_stats)
  assert (best.image_standardizer is None) == (model == "l3net")
  assert best.music_standardizer.mean_D.shape == (config.spectrogram.num_mel_bins,)
  if model == "l3net":
    pixels = inputs.model_inputs(splits["test"].images, "pixels", best.config)
    assert pixels.shape[1:] == (8, 8, 3) and pixels.dtype == np.uint8
  objective = objectives.create_objective(best.config)
  feed = feeds.TableFeed(best.config, splits, inputs.make_mesh(best.config.batch_size),
                         objective, (best.image_standardizer, best.music_standardizer))
  module = models.create_model(best.config)
  variables_S = {"params": best.params, "batch_stats": best.batch_stats}
  metrics = common.make_pair_scorer(module, objective)(
      variables_S, *feed.embed(module, variables_S, "test"), feed.fixed["test"])
  assert float(metrics["accuracy"][0]) == pytest.approx(results["test_accuracy"])


def test_resumed_run_ends_as_an_uninterrupted_one(tmp_path, splits):
  config = fakes.small_media_config("l3net", num_epochs=2, patience=100)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"), splits=splits)
  train.train_and_evaluate(fakes.small_media_config("l3net", patience=100),
                           str(tmp_path / "parts"), splits=splits)
  resumed = train.train_and_evaluate(config, str(tmp_path / "parts"), splits=splits)
  assert resumed["steps"] == whole["steps"] == 44
  for key in ("test_accuracy", "test_auc", "val_accuracy", "best_step"):
    assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key


def test_media_model_on_a_features_dataset_says_which_dataset(tmp_path):
  with pytest.raises(ValueError, match="reads pixels.*imac/synthetic_media"):
    train.train_and_evaluate(fakes.small_media_config("l3net"), str(tmp_path),
                             splits=generated.make_splits())
