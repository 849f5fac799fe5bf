"""ACP-Net: the paper's layer counts and sizes, tower/fusion methods, dropout, the factory."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acp_jax import models
from configs import acp


def _init(config, batch=3):
  model = models.create_model(config)
  image_BxD = jax.random.normal(jax.random.key(1), (batch, 2048))
  music_BxD = jax.random.normal(jax.random.key(2), (batch, 193))
  variables = model.init(jax.random.key(0), image_BxD, music_BxD)
  return model, variables, image_BxD, music_BxD


def test_paper_architecture():
  model, variables, image_BxD, music_BxD = _init(acp.get_config())
  params = variables["params"]
  # Kernels are [out, in].
  out_in = lambda tower: [tuple(layer["kernel"].shape) for layer in params[tower].values()]
  assert out_in("image_tower") == [(1024, 2048), (1024, 1024)]            # 2 FC -> 1024
  assert len(out_in("music_tower")) == 4 and out_in("music_tower")[0][1] == 193
  assert out_in("music_tower")[-1][0] == 1024                              # 4 FC -> 1024
  assert out_in("fusion")[0][1] == 2048                                    # the concatenation
  assert len(out_in("fusion")) + 1 == 4 and params["logits"]["kernel"].shape[0] == 2
  assert model.apply(variables, image_BxD, music_BxD).shape == (3, 2)


def test_methods_compose_to_the_full_model():
  config = acp.get_config()
  model, variables, image_BxD, music_BxD = _init(config, batch=5)
  image_BxE = model.apply(variables, image_BxD, method="embed_image")
  music_BxE = model.apply(variables, music_BxD, method="embed_music")
  assert image_BxE.shape == music_BxE.shape == (5, 1024)
  np.testing.assert_allclose(model.apply(variables, image_BxE, music_BxE, method="fuse"),
                             model.apply(variables, image_BxD, music_BxD), rtol=1e-5, atol=1e-6)


def test_dropout_only_when_training():
  config = acp.get_config()
  config.dropout_in_towers = True
  model, variables, image_BxD, music_BxD = _init(config)
  run = lambda **kw: model.apply(variables, image_BxD, music_BxD, **kw)
  np.testing.assert_array_equal(run(), run(train=False))
  first = run(train=True, rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(first, run(train=True, rngs={"dropout": jax.random.key(1)}))
  np.testing.assert_array_equal(first, run(train=True, rngs={"dropout": jax.random.key(0)}))
  # Without tower dropout the embeddings ignore the dropout rng.
  config.dropout_in_towers = False
  model, variables, image_BxD, _ = _init(config)
  embed = lambda key: model.apply(variables, image_BxD, train=True, method="embed_image",
                                  rngs={"dropout": jax.random.key(key)})
  np.testing.assert_array_equal(embed(0), embed(1))


def test_dense_is_nn_dense_transposed():
  x_BxI = jax.random.normal(jax.random.key(0), (4, 7))
  ours = models.Dense(5)
  variables = ours.init(jax.random.key(1), x_BxI)
  kernel_OxI, bias_O = variables["params"]["kernel"], variables["params"]["bias"]
  reference = nn.Dense(5).apply({"params": {"kernel": kernel_OxI.T, "bias": bias_O}}, x_BxI)
  np.testing.assert_allclose(ours.apply(variables, x_BxI), reference, rtol=1e-6)
  # Same initialisation scale as nn.Dense: variance 1 / fan_in.
  big = models.Dense(512).init(jax.random.key(2), jnp.zeros((1, 2048)))["params"]["kernel"]
  assert big.std() == pytest.approx((1 / 2048) ** 0.5, rel=0.05)


def test_factory_errors():
  config = acp.get_config()
  config.model = "l3net"
  with pytest.raises(ValueError, match="unknown config.model 'l3net'"):
    models.create_model(config)
  config = acp.get_config()
  config.music_widths = (256, 512)
  with pytest.raises(ValueError, match="same embedding size"):
    _init(config)
