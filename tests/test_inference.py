"""Pair scores for retrieval: the factored fusion head equals the full one on every pair."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakes
from acp_jax import inference
from acp_jax import models
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
  variables = model.init(jax.random.key(0), jnp.zeros((1, fakes.IMAGE_DIM)),
                         jnp.zeros((1, fakes.MUSIC_DIM)))
  embed_dim = config.image_widths[-1]
  music_MxE = jax.nn.relu(jax.random.normal(jax.random.key(1), (9, embed_dim)))
  image_NxE = jax.nn.relu(jax.random.normal(jax.random.key(2), (13, embed_dim)))
  got_MxN = inference.match_scores(model, variables, music_MxE, image_NxE, block)
  want_MxN = _full_log_odds(model, variables, music_MxE, image_NxE)
  assert got_MxN.shape == (9, 13)
  np.testing.assert_allclose(got_MxN, want_MxN, rtol=1e-4, atol=1e-4 * np.abs(want_MxN).max())


def test_best_seed():
  assert inference.best_seed(np.array([0.6, 0.8, 0.7]), None) == 1
  assert inference.best_seed(np.array([0.6, 0.8, 0.7]), 2) == 2
  with pytest.raises(ValueError, match="out of range.*3 seed"):
    inference.best_seed(np.array([0.6, 0.8, 0.7]), 3)
