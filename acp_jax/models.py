"""ACP-Net (paper section 3) and its Table 4 baselines in Flax linen, and the model factory.

A correspondence model maps an (image, music) pair of input rows to 2-way logits
(index 1 = true correspondence). It exposes its two towers and its fusion head as
methods so that scoring many pairs embeds each item once and runs only the head on
the pairs:

  emb_NxE = model.apply(variables, image_NxD, method="embed_image")
  emb_MxE = model.apply(variables, music_MxD, method="embed_music")
  logits_Px2 = model.apply(variables, emb_NxE[image_P], emb_MxE[music_P], method="fuse")

`model.apply(variables, image_BxD, music_BxD)` is the composition of the three.
Every method takes `train`; with `train=True` dropout needs a 'dropout' rng, and a
model with conv towers updates its BatchNorm statistics (`mutable=['batch_stats']`).

All three models are two towers into a common space (`TwoTowers`) and a fusion head
(`ACPNet`) or, trained with a contrastive objective (acp_jax/objectives.py), a
projection head per tower whose pair score is a cosine similarity (`EmbeddingNet`,
the same methods). They differ in the towers (inputs per model: acp_jax/inputs.py):
  acp              FC towers on Inception features and the 193-d music descriptor
  spectrogram_acp  ACP-Net with a conv music tower on log-spectrograms, then FC to 1024
  l3net            L3-Net (Arandjelovic & Zisserman 2017): conv towers on pixels and
                   log-spectrograms, each max-pooled to 512-d, and a 128-unit FC head
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from acp_jax import labels

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
  """Dense layers of the given widths, each followed by ReLU and dropout.

  With `preactivated=True` the input is already the first layer's Dense output.
  """
  widths: Sequence[int]
  dropout_rate: float

  @nn.compact
  def __call__(self, x_BxD: jax.Array, *, train: bool, preactivated: bool = False) -> jax.Array:
    for i, width in enumerate(self.widths):
      if not (preactivated and i == 0):
        # Named as linen would auto-name them, so both call modes share one params tree.
        x_BxD = Dense(width, name=f"Dense_{i}")(x_BxD)
      x_BxD = nn.relu(x_BxD)
      x_BxD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxD)
    return x_BxD


def _max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """`nn.max_pool(x, (2, 2), strides=(2, 2))`: an odd last row or column is dropped.

  As a reshape and max, whose gradient XLA:CPU runs ~3x faster than max_pool's
  select-and-scatter.
  """
  b, h, w, c = x_BxHxWxC.shape
  x_BxHxWxC = x_BxHxWxC[:, :h - h % 2, :w - w % 2]
  return x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvTower(nn.Module):
  """L3-Net's subnetwork, then FC layers (none in L3-Net itself).

  Blocks of two conv3x3 + BatchNorm + ReLU, one block per entry of `channels`, 2x2
  max-pooled between blocks; the last block is max-pooled over all positions, so
  the output is `channels[-1]`-d (then `widths[-1]`-d) whatever the input size.
  Input: B x H x W x 3 uint8 pixels or B x T x F (standardised) spectrograms.
  """
  channels: Sequence[int]
  widths: Sequence[int]
  dropout_rate: float
  batch_norm_momentum: float

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
    if x_BxHxWxC.dtype == jnp.uint8:
      # Pixels: to [-1, 1], as Keras's Inception preprocessing.
      x_BxHxWxC = x_BxHxWxC / 127.5 - 1.0
    elif x_BxHxWxC.ndim == 3:
      # A B x T x F spectrogram is a one-channel image.
      x_BxHxWxC = x_BxHxWxC[..., None]
    for i, channels in enumerate(self.channels):
      if i:
        x_BxHxWxC = _max_pool_2x2(x_BxHxWxC)
      for _ in range(2):
        # No conv bias: BatchNorm's offset replaces it.
        x_BxHxWxC = nn.Conv(channels, (3, 3), use_bias=False)(x_BxHxWxC)
        x_BxHxWxC = nn.BatchNorm(use_running_average=not train,
                                 momentum=self.batch_norm_momentum)(x_BxHxWxC)
        x_BxHxWxC = nn.relu(x_BxHxWxC)
    return FullyConnected(self.widths, self.dropout_rate)(x_BxHxWxC.max(axis=(1, 2)), train=train)


class TwoTowers(nn.Module):
  """An image tower and a music tower into a common space; subclasses add how a pair scores.

  A tower is FC layers on feature rows or, given conv channels, a `ConvTower` on
  pixels or spectrograms.

  Attributes:
    image_widths: the image tower's FC widths; the last is the embedding size.
    music_widths: the music tower's FC widths; the last is the embedding size.
    dropout_rate: drop probability after every hidden FC layer of the head.
    dropout_in_towers: also after every tower layer.
    image_channels: conv blocks of the image tower, before its FC layers; () for none.
    music_channels: conv blocks of the music tower, before its FC layers; () for none.
    batch_norm_momentum: decay of the conv towers' BatchNorm running statistics.
  """
  image_widths: Sequence[int]
  music_widths: Sequence[int]
  dropout_rate: float
  dropout_in_towers: bool
  image_channels: Sequence[int] = ()
  music_channels: Sequence[int] = ()
  batch_norm_momentum: float = 0.9

  def setup(self):
    embedding = lambda widths, channels: (tuple(channels) + tuple(widths))[-1]
    image_size = embedding(self.image_widths, self.image_channels)
    music_size = embedding(self.music_widths, self.music_channels)
    if image_size != music_size:
      raise ValueError("the towers must end in the same embedding size, got "
                       f"{image_size} (image) and {music_size} (music)")
    tower_dropout_rate = self.dropout_rate if self.dropout_in_towers else 0.0
    self.image_tower = self._tower(self.image_channels, self.image_widths, tower_dropout_rate)
    self.music_tower = self._tower(self.music_channels, self.music_widths, tower_dropout_rate)

  def _tower(self, channels: Sequence[int], widths: Sequence[int], dropout_rate: float
             ) -> nn.Module:
    if not channels:
      return FullyConnected(widths, dropout_rate)
    return ConvTower(channels, widths, dropout_rate, self.batch_norm_momentum)

  def embed_image(self, image_BxD: jax.Array, *, train: bool = False) -> jax.Array:
    return self.image_tower(image_BxD, train=train)

  def embed_music(self, music_BxD: jax.Array, *, train: bool = False) -> jax.Array:
    return self.music_tower(music_BxD, train=train)

  def __call__(self, image_BxD: jax.Array, music_BxD: jax.Array, *,
               train: bool = False) -> jax.Array:
    return self.fuse(self.embed_image(image_BxD, train=train),
                     self.embed_music(music_BxD, train=train), train=train)


class ACPNet(TwoTowers):
  """The two towers, then fusion layers on their concatenation to 2 logits.

  Attributes (besides `TwoTowers`'):
    fusion_widths: hidden FC widths of the fusion head; one more FC layer gives the logits.
    class_heads: a linear emotion-class classifier on each tower's embedding, trained by
      the objective's class loss (`config.class_loss_weight`); not part of a pair's score.
  """
  fusion_widths: Sequence[int] = ()
  class_heads: bool = False

  def setup(self):
    super().setup()
    self.fusion = FullyConnected(self.fusion_widths, self.dropout_rate)
    self.logits = Dense(NUM_LOGITS)
    if self.class_heads:
      self.image_classes = Dense(len(labels.CLASSES))
      self.music_classes = Dense(len(labels.CLASSES))

  def __call__(self, image_BxD: jax.Array, music_BxD: jax.Array, *,
               train: bool = False) -> jax.Array:
    if self.class_heads:  # through the heads, so that init makes their params too
      return self.logits_and_classes(image_BxD, music_BxD, train=train)[0]
    return super().__call__(image_BxD, music_BxD, train=train)

  def logits_and_classes(self, image_BxD: jax.Array, music_BxD: jax.Array, *,
                         train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(pair logits_Bx2, image class logits_BxC, music class logits_BxC)."""
    image_BxE = self.embed_image(image_BxD, train=train)
    music_BxE = self.embed_music(music_BxD, train=train)
    return (self.fuse(image_BxE, music_BxE, train=train), self.image_classes(image_BxE),
            self.music_classes(music_BxE))

  def fuse(self, image_BxE: jax.Array, music_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    joint_Bx2E = jnp.concatenate([image_BxE, music_BxE], axis=-1)
    return self.logits(self.fusion(joint_Bx2E, train=train))

  # Ranking Q queries against K keys scores Q x K pairs. The fusion head's first layer
  # is linear in concat(image, music), so its output is the sum of one term per side:
  # project each embedding once (Q + K matmuls with the widest kernel) and run only
  # the rest of the head per pair, `fuse_projected(project_image(i), project_music(m))`
  # == `fuse(i, m)`. Inference only (no dropout).

  def project_image(self, image_BxE: jax.Array) -> jax.Array:
    kernel_HxE = self.fusion.variables["params"]["Dense_0"]["kernel"][:, :image_BxE.shape[-1]]
    return jnp.einsum("...e,he->...h", image_BxE, kernel_HxE)

  def project_music(self, music_BxE: jax.Array) -> jax.Array:
    first = self.fusion.variables["params"]["Dense_0"]
    kernel_HxE = first["kernel"][:, -music_BxE.shape[-1]:]
    return jnp.einsum("...e,he->...h", music_BxE, kernel_HxE) + first["bias"]

  def fuse_projected(self, image_BxH: jax.Array, music_BxH: jax.Array) -> jax.Array:
    return self.logits(self.fusion(image_BxH + music_BxH, train=False, preactivated=True))


class ProjectionHead(nn.Module):
  """Dense layers with ReLU and dropout between them, then L2 normalisation onto the unit sphere."""
  widths: Sequence[int]
  dropout_rate: float

  @nn.compact
  def __call__(self, x_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.widths):
      if i:
        x_BxE = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x_BxE))
      x_BxE = Dense(width)(x_BxE)
    return x_BxE / jnp.maximum(jnp.linalg.norm(x_BxE, axis=-1, keepdims=True), 1e-12)


# The name of an EmbeddingNet's match threshold in its `batch_stats`: the collection the
# loop carries, saves and restores beside the params without training it.
THRESHOLD = "threshold"


class EmbeddingNet(TwoTowers):
  """The two towers, each with a projection head into a shared unit sphere (contrastive).

  A pair scores by the cosine similarity of its projections; the 2 logits are
  (0, cosine - threshold), so the pair is a match when the cosine exceeds the
  threshold, and ranking by log-odds is ranking by cosine. The threshold is model
  state outside the params (collection `batch_stats`, see `THRESHOLD`): training
  leaves it alone and evaluation sets it on the validation pairs
  (acp_jax/objectives.py), so it is saved and restored with the params it belongs to.

  Attributes (besides `TwoTowers`'):
    projection_widths: the heads' widths; the last is the size of the shared space.
    projection_dropout_rate: drop probability after each hidden layer of the heads.
    logit_scale_init: None, or the initial log of a learnable temperature (SigLIP);
      with it comes a learnable bias, `logit_bias_init` at first.
    logit_bias_init: see `logit_scale_init`.
  """
  projection_widths: Sequence[int] = (128,)
  projection_dropout_rate: float = 0.0
  logit_scale_init: float | None = None
  logit_bias_init: float = 0.0

  def setup(self):
    super().setup()
    self.image_head = ProjectionHead(self.projection_widths, self.projection_dropout_rate)
    self.music_head = ProjectionHead(self.projection_widths, self.projection_dropout_rate)
    self.threshold = self.variable("batch_stats", THRESHOLD, jnp.zeros, ())
    if self.logit_scale_init is not None:
      self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init),
                                    ())
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())

  def project_image(self, image_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    return self.image_head(image_BxE, train=train)

  def project_music(self, music_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    return self.music_head(music_BxE, train=train)

  def project_items(self, image_BxD: jax.Array, music_BxD: jax.Array, *,
                    train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Unit-norm projections (image_BxK, music_BxK) of input rows."""
    return (self.project_image(self.embed_image(image_BxD, train=train), train=train),
            self.project_music(self.embed_music(music_BxD, train=train), train=train))

  def fuse_projected(self, image_BxK: jax.Array, music_BxK: jax.Array) -> jax.Array:
    score_B = jnp.sum(image_BxK * music_BxK, axis=-1) - self.threshold.value
    return jnp.stack([jnp.zeros_like(score_B), score_B], axis=-1)

  def fuse(self, image_BxE: jax.Array, music_BxE: jax.Array, *, train: bool = False) -> jax.Array:
    return self.fuse_projected(self.project_image(image_BxE), self.project_music(music_BxE))


def _acp_net(config: ml_collections.ConfigDict, **conv_towers) -> nn.Module:
  """The towers with ACP-Net's fusion head or, for a contrastive objective, projection heads."""
  towers = dict(image_widths=tuple(config.image_widths), music_widths=tuple(config.music_widths),
                dropout_rate=config.dropout_rate, dropout_in_towers=config.dropout_in_towers,
                **conv_towers)
  if config.objective == "correspondence":
    return ACPNet(fusion_widths=tuple(config.fusion_widths),
                  class_heads=config.class_loss_weight > 0, **towers)
  return EmbeddingNet(projection_widths=tuple(config.projection_widths),
                      projection_dropout_rate=config.projection_dropout_rate,
                      logit_scale_init=config.logit_scale_init,
                      logit_bias_init=config.logit_bias_init, **towers)


def _spectrogram_acp(config: ml_collections.ConfigDict) -> nn.Module:
  return _acp_net(config, music_channels=tuple(config.music_channels),
                  batch_norm_momentum=config.batch_norm_momentum)


def _l3_net(config: ml_collections.ConfigDict) -> nn.Module:
  return _acp_net(config, image_channels=tuple(config.image_channels),
                  music_channels=tuple(config.music_channels),
                  batch_norm_momentum=config.batch_norm_momentum)


# config.model -> constructor; a baseline registers itself here (and its inputs in
# acp_jax/inputs.py) and reuses the loop.
MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "acp": _acp_net, "spectrogram_acp": _spectrogram_acp, "l3net": _l3_net}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The correspondence model named by `config.model`."""
  if config.model not in MODELS:
    raise ValueError(f"unknown config.model {config.model!r}; known: {sorted(MODELS)}")
  return MODELS[config.model](config)
