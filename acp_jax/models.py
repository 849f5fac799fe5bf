"""ACP-Net (paper section 3) in Flax linen, and the factory that builds a model from a config.

A correspondence model maps an (image, music) pair of feature rows to 2-way logits
(index 1 = true correspondence). It exposes its two towers and its fusion head as
methods so that scoring many pairs embeds each item once and runs only the head on
the pairs:

  emb_NxE = model.apply(variables, image_NxD, method="embed_image")
  emb_MxE = model.apply(variables, music_MxD, method="embed_music")
  logits_Px2 = model.apply(variables, emb_NxE[image_P], emb_MxE[music_P], method="fuse")

`model.apply(variables, image_BxD, music_BxD)` is the composition of the three.
Every method takes `train`; with `train=True` dropout needs a 'dropout' rng.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

NUM_LOGITS = 2  # false / true correspondence


class Dense(nn.Module):
  """`nn.Dense` (same function and initialisation) with the kernel stored [out, in].

  Under vmap over seeds, XLA:CPU produces each kernel gradient as [out, in]; with
  nn.Dense's [in, out] every gradient is transposed every step, which triples the
  step time at small batch sizes.
  """
  features: int

  @nn.compact
  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    kernel_OxI = self.param("kernel", nn.initializers.lecun_normal(in_axis=-1, out_axis=-2),
                            (self.features, x_BxI.shape[-1]))
    bias_O = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return jnp.einsum("...i,oi->...o", x_BxI, kernel_OxI) + bias_O


class FullyConnected(nn.Module):
  """Dense layers of the given widths, each followed by ReLU and dropout."""
  widths: Sequence[int]
  dropout_rate: float

  @nn.compact
  def __call__(self, x_BxD: jax.Array, *, train: bool) -> jax.Array:
    for width in self.widths:
      x_BxD = nn.relu(Dense(width)(x_BxD))
      x_BxD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxD)
    return x_BxD


class ACPNet(nn.Module):
  """Image tower and music tower into a common space, then fusion layers to 2 logits.

  Attributes:
    image_widths: the image tower's FC widths; the last is the embedding size.
    music_widths: the music tower's FC widths; the last is the embedding size.
    fusion_widths: hidden FC widths of the fusion head; one more FC layer gives the logits.
    dropout_rate: drop probability after every hidden FC layer of the fusion head.
    dropout_in_towers: also after every tower layer.
  """
  image_widths: Sequence[int]
  music_widths: Sequence[int]
  fusion_widths: Sequence[int]
  dropout_rate: float
  dropout_in_towers: bool

  def setup(self):
    if self.image_widths[-1] != self.music_widths[-1]:
      raise ValueError("the towers must end in the same embedding size, got "
                       f"{self.image_widths[-1]} (image) and {self.music_widths[-1]} (music)")
    tower_dropout_rate = self.dropout_rate if self.dropout_in_towers else 0.0
    self.image_tower = FullyConnected(self.image_widths, tower_dropout_rate)
    self.music_tower = FullyConnected(self.music_widths, tower_dropout_rate)
    self.fusion = FullyConnected(self.fusion_widths, self.dropout_rate)
    self.logits = Dense(NUM_LOGITS)

  def embed_image(self, image_BxD: jax.Array, *, train: bool = False) -> jax.Array:
    return self.image_tower(image_BxD, train=train)

  def embed_music(self, music_BxD: jax.Array, *, train: bool = False) -> jax.Array:
    return self.music_tower(music_BxD, train=train)

  def fuse(self, image_BxE: jax.Array, music_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    joint_Bx2E = jnp.concatenate([image_BxE, music_BxE], axis=-1)
    return self.logits(self.fusion(joint_Bx2E, train=train))

  def __call__(self, image_BxD: jax.Array, music_BxD: jax.Array, *,
               train: bool = False) -> jax.Array:
    return self.fuse(self.embed_image(image_BxD, train=train),
                     self.embed_music(music_BxD, train=train), train=train)


def _acp_net(config: ml_collections.ConfigDict) -> nn.Module:
  return ACPNet(image_widths=tuple(config.image_widths), music_widths=tuple(config.music_widths),
                fusion_widths=tuple(config.fusion_widths), dropout_rate=config.dropout_rate,
                dropout_in_towers=config.dropout_in_towers)


# config.model -> constructor; a baseline registers itself here and reuses the loop.
MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {"acp": _acp_net}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The correspondence model named by `config.model`."""
  if config.model not in MODELS:
    raise ValueError(f"unknown config.model {config.model!r}; known: {sorted(MODELS)}")
  return MODELS[config.model](config)
