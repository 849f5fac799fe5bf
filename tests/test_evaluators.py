"""What the evaluators share: the factored fusion head's pair scores, the analysed seed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakes
from acp_jax import generated
from acp_jax import models
from acp_jax.evaluators import common
from configs import acp


def _full_log_odds(model, variables, music_MxE, image_NxE):
  """Every pair through `fuse`, the way training scores a pair."""
  music_PxE = jnp.repeat(music_MxE, len(image_NxE), axis=0)
  image_PxE = jnp.tile(image_NxE, (len(music_MxE), 1))
  logits_Px2 = model.apply(variables, image_PxE, music_PxE, method="fuse")
  return np.asarray(logits_Px2[:, 1] - logits_Px2[:, 0]).reshape(len(music_MxE), len(image_NxE))


@pytest.mark.parametrize("config, block", [(acp.get_config(), 64), (fakes.small_config(), 7)])
def test_factored_scores_equal_full_fusion(config, block):
  model = models.create_model(config)
  variables = model.init(jax.random.key(0), jnp.zeros((1, generated.IMAGE_DIM)),
                         jnp.zeros((1, generated.MUSIC_DIM)))
  embed_dim = config.image_widths[-1]
  music_MxE = jax.nn.relu(jax.random.normal(jax.random.key(1), (9, embed_dim)))
  image_NxE = jax.nn.relu(jax.random.normal(jax.random.key(2), (13, embed_dim)))
  got_MxN = common.match_scores(model, variables, music_MxE, image_NxE, block)
  want_MxN = _full_log_odds(model, variables, music_MxE, image_NxE)
  assert got_MxN.shape == (9, 13)
  np.testing.assert_allclose(got_MxN, want_MxN, rtol=1e-4, atol=1e-4 * np.abs(want_MxN).max())


def _subject(val_accuracy_S, seed=-1) -> common.Subject:
  return common.Subject(config=None, module=None, objective=None, feed=None, variables_S={},
                        val_accuracy_S=np.asarray(val_accuracy_S), best_step_S=None,
                        splits={}, run_dir=None, figures_dir=None, seed=seed)


def test_analysed_seed_is_the_best_by_validation_unless_given():
  assert _subject([0.6, 0.8, 0.7]).seed == 1
  assert _subject([0.6, 0.8, 0.7], seed=2).seed == 2
  assert _subject([0.6, 0.8, 0.7]).description == (
      "seed index 1 of 3 (validation accuracy 80.00%)")
