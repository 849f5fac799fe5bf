"""ACP-Net, the baselines and the embedding model: layer counts and sizes, tower/head methods,
dropout, BatchNorm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acp_jax import inputs
from acp_jax import models
from configs import acp
from configs import contrastive
from configs import l3net
from configs import spectrogram_acp


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


def _init_media(config, batch=3, frames=21):
  """A baseline with its media inputs: uint8 pixels or features, and log-spectrograms."""
  model = models.create_model(config)
  if inputs.INPUTS[config.model][0] == "pixels":
    image = jax.random.randint(jax.random.key(1), (batch, 32, 32, 3), 0, 256).astype(jnp.uint8)
  else:
    image = jax.random.normal(jax.random.key(1), (batch, 2048))
  music_BxTxF = jax.random.normal(jax.random.key(2), (batch, frames,
                                                      config.spectrogram.num_mel_bins))
  return model, model.init(jax.random.key(0), image, music_BxTxF), image, music_BxTxF


def test_l3_net_architecture():
  model, variables, pixels, music_BxTxF = _init_media(l3net.get_config())
  params = variables["params"]
  for tower, in_channels in (("image_tower", 3), ("music_tower", 1)):
    convs = [layer["kernel"].shape for name, layer in params[tower].items()
             if name.startswith("Conv")]
    # 4 blocks of 2 conv3x3 (each with BatchNorm), 64/128/256/512 channels.
    assert convs[0] == (3, 3, in_channels, 64) and len(convs) == 8
    assert [shape[-1] for shape in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert len(variables["batch_stats"][tower]) == 8
  assert params["fusion"]["Dense_0"]["kernel"].shape == (128, 1024)  # concat of two 512-d
  assert params["logits"]["kernel"].shape == (2, 128)
  assert model.apply(variables, pixels, music_BxTxF).shape == (3, 2)


def test_spectrogram_acp_architecture():
  model, variables, features, music_BxTxF = _init_media(spectrogram_acp.get_config())
  params, acp_params = variables["params"], _init(acp.get_config())[1]["params"]
  # ACP-Net's image tower and head; the music tower is conv blocks then FC to 1024.
  for name in ("image_tower", "fusion", "logits"):
    assert (jax.tree.map(jnp.shape, params[name]) == jax.tree.map(jnp.shape, acp_params[name]))
  assert params["music_tower"]["FullyConnected_0"]["Dense_0"]["kernel"].shape == (1024, 512)
  assert "image_tower" not in variables["batch_stats"]
  assert model.apply(variables, features, music_BxTxF).shape == (3, 2)


@pytest.mark.parametrize("get_config", [l3net.get_config, spectrogram_acp.get_config])
def test_baseline_methods_compose_and_batch_norm_trains(get_config):
  config = get_config("synthetic")
  model, variables, image, music_BxTxF = _init_media(config, batch=4)
  image_BxE = model.apply(variables, image, method="embed_image")
  music_BxE = model.apply(variables, music_BxTxF, method="embed_music")
  assert image_BxE.shape == music_BxE.shape
  np.testing.assert_allclose(model.apply(variables, image_BxE, music_BxE, method="fuse"),
                             model.apply(variables, image, music_BxTxF), rtol=1e-5, atol=1e-6)
  # Items embed alike alone or in a batch: evaluation uses the running statistics.
  np.testing.assert_allclose(model.apply(variables, music_BxTxF[:1], method="embed_music"),
                             music_BxE[:1], rtol=1e-5, atol=1e-5)
  # Training normalises with the batch's statistics and updates the running ones.
  _, updated = model.apply(variables, image, music_BxTxF, train=True,
                           rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), updated["batch_stats"],
                         variables["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_every_model_says_what_it_reads():
  assert set(inputs.INPUTS) == set(models.MODELS)


def test_factory_errors():
  config = acp.get_config()
  config.model = "vggish"
  with pytest.raises(ValueError, match="unknown config.model 'vggish'"):
    models.create_model(config)
  config = acp.get_config()
  config.music_widths = (256, 512)
  with pytest.raises(ValueError, match="same embedding size"):
    _init(config)


@pytest.mark.parametrize("objective", ["supcon", "sigmoid"])
def test_embedding_model_scores_pairs_by_cosine_less_its_threshold(objective):
  config = contrastive.get_config(objective)
  model, variables, image_BxD, music_BxD = _init(config, batch=4)
  params = variables["params"]
  assert {"image_tower", "music_tower", "image_head", "music_head"} <= set(params)
  assert "fusion" not in params
  assert params["image_head"]["Dense_1"]["kernel"].shape == (128, 256)  # 128-d projections
  # SigLIP's learnable temperature and bias, initialised as SigLIP does; none for SupCon.
  if objective == "sigmoid":
    assert (float(params["logit_scale"]), float(params["logit_bias"])) == pytest.approx(
        (np.log(10.0), -10.0))
  else:
    assert "logit_scale" not in params
  variables = {**variables, "batch_stats": {models.THRESHOLD: jnp.array(0.25)}}

  image_BxK, music_BxK = model.apply(variables, image_BxD, music_BxD, method="project_items")
  np.testing.assert_allclose(np.linalg.norm(image_BxK, axis=-1), 1.0, rtol=1e-5)
  cosine_B = np.sum(np.asarray(image_BxK) * np.asarray(music_BxK), axis=-1)
  logits_Bx2 = model.apply(variables, image_BxD, music_BxD)
  np.testing.assert_allclose(logits_Bx2[:, 1] - logits_Bx2[:, 0], cosine_B - 0.25, atol=1e-5)
  # The inference path (project each side once, then score) gives the same scores.
  image_BxE = model.apply(variables, image_BxD, method="embed_image")
  music_BxE = model.apply(variables, music_BxD, method="embed_music")
  projected = model.apply(variables, model.apply(variables, image_BxE, method="project_image"),
                          model.apply(variables, music_BxE, method="project_music"),
                          method="fuse_projected")
  np.testing.assert_allclose(projected, logits_Bx2, atol=1e-5)
