"""The harder synthetic corpus: its builder config and how its cues are weakened."""

import dataclasses

import numpy as np
import pytest

from tfds_imac import synthetic
from tfds_imac.imac import imac_dataset_builder


def test_synthetic_hard_is_harder_and_larger():
  configs = {c.name: c for c in imac_dataset_builder.Builder.BUILDER_CONFIGS}
  easy, hard = configs["synthetic"].synthetic, configs["synthetic_hard"].synthetic
  assert hard.cue_strength < easy.cue_strength == 1.0
  assert hard.label_noise > easy.label_noise
  assert hard.num_images > easy.num_images and hard.num_songs > easy.num_songs


def test_weakened_cues_move_toward_the_mean_over_classes():
  rng = np.random.default_rng(0)
  # Full strength draws nothing: the existing corpora keep their bytes.
  assert synthetic._weakened(synthetic._STYLES, 2, 1.0, rng) is synthetic._STYLES[2]
  assert rng.random() == np.random.default_rng(0).random()

  look = synthetic._weakened(synthetic._LOOKS, 2, 0.5, np.random.default_rng(1))
  mean_value = np.mean([lk.value for lk in synthetic._LOOKS], axis=0)
  assert look.value == pytest.approx(tuple((np.array(synthetic._LOOKS[2].value) + mean_value) / 2))
  style = synthetic._weakened(synthetic._STYLES, 0, 0.5, np.random.default_rng(1))
  assert all(isinstance(k, int) for k in style.key + style.harmonics)  # still MIDI notes, counts
  # The discrete cues (shape, chord) come from a random class about half the time.
  chords = [synthetic._weakened(synthetic._STYLES, 0, 0.5, np.random.default_rng(s)).chord
            for s in range(200)]
  own = np.mean([c == synthetic._STYLES[0].chord for c in chords])
  assert 0.55 < own < 0.8  # 0.5 kept + 0.5 x 1/3 drawn back: 2/3

  with pytest.raises(ValueError, match="cue_strength"):
    dataclasses.replace(synthetic.CorpusConfig(), cue_strength=0.0)
