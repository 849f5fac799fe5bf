"""The models learn: each reaches 0.8 x the oracle accuracy on fake splits.

Where the other tests check outputs, shapes and resumes, these fail when a model
does not learn: a tower ignored, training labels that do not belong to their pairs,
an update that does nothing. The fake corpora are small and their class signal is
strong (`SIGNAL`), so that a working model gets there in about 200 steps; chance is
0.5 and the oracle (set by the label noise) about 0.95.
"""

import pytest

import fakes
from acp_jax import generated
from acp_jax import train

SIGNAL = 1.0       # std of the class means against unit noise (generated.make_splits)
MIN_RATIO = 0.8    # test accuracy / oracle accuracy
# Early stopping: evaluate every 5 epochs (30 steps at batch 64), stop after 2 without gain.
LOOP = dict(batch_size=64, num_epochs=50, eval_every_epochs=5.0, patience=2,
            log_every_steps=30, checkpoint_every_epochs=50.0, steps_per_dispatch=10)
# Towers wide enough to leave the chance plateau within ~100 steps.
WIDTHS = dict(image_widths=(256, 64), fusion_widths=(64, 32, 16))


def _assert_learns(results: dict) -> None:
  ratio = results["test_accuracy"] / results["oracle_accuracy"]
  assert ratio >= MIN_RATIO, (
      f"{results['model']} did not learn: test accuracy {results['test_accuracy']:.3f} is "
      f"{ratio:.2f} x the oracle's {results['oracle_accuracy']:.3f} (chance 0.5) after "
      f"{results['steps']} steps")


def test_acp_net_learns_and_ranks(tmp_path):
  config = fakes.small_config(**LOOP, **WIDTHS, music_widths=(64, 64, 64, 64))
  results = train.train_and_evaluate(config, str(tmp_path),
                                     splits=generated.make_splits(signal=SIGNAL))
  _assert_learns(results)
  # The ranking uses what the model learned: mAP well above chance both ways.
  for direction, metrics in results["retrieval"].items():
    assert metrics["map"] > metrics["chance"]["map"] + 0.2, (direction, metrics)


@pytest.mark.parametrize("model,settings", [
    ("spectrogram_acp", {**LOOP, **WIDTHS, "music_widths": (64,)}),
    # L3-Net's conv towers learn from pixels at a smaller batch: 220 steps of 32 pairs.
    ("l3net", dict(batch_size=32, num_epochs=20, eval_every_epochs=2.0, patience=100,
                   log_every_steps=22, checkpoint_every_epochs=20.0)),
])
def test_baseline_learns(tmp_path, model, settings):
  config = fakes.small_media_config(model, **settings)
  results = train.train_and_evaluate(
      config, str(tmp_path), splits=fakes.with_media(generated.make_splits(signal=SIGNAL)))
  _assert_learns(results)
