"""What a model learns from: the training objective, chosen by `config.objective`.

One interface, three implementations. An objective says
  * what a step samples from the device tables (`sample`: item indices and targets),
  * the loss on those items (`loss`, with the in-batch accuracy logged beside it),
  * how evaluation turns a pair's score into a decision (`choose_cut`, `calibrate`).

  correspondence  ACP-Net's: cross-entropy of the fusion head on balanced true/false
                  pairs; a pair matches when its match log-odds exceed 0.
  supcon          Emo-CLIM's (Stewart et al., ICASSP 2024): supervised contrastive loss
                  image-image, music-music, image->music and music->image, each over
                  the batch's classes, weighted by `config.supcon_weights`.
  sigmoid         SigLIP's (Zhai et al., ICCV 2023): a logistic loss on every image-music
                  pair of the batch, positive when the two share a class, with a
                  learnable temperature and bias.

The contrastive objectives train an `EmbeddingNet` (acp_jax/models.py) on batches of
items, each image with a music item of its class; a pair scores by the cosine
similarity of its projections. Their match threshold is chosen on the validation
pairs at every evaluation (the cut that maximises accuracy there) and kept in the
model's state, so the best checkpoint holds the threshold its params were chosen with
and the test pairs are judged with it.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from acp_jax import models
from acp_jax import pairs

# What a step samples: (image_B, music_B) rows of the tables and a target per row.
Sample = tuple[jax.Array, jax.Array, jax.Array]


def supcon_loss(anchor_NxK: jax.Array, other_MxK: jax.Array, anchor_class_N: jax.Array,
                other_class_M: jax.Array, temperature: float, *, same_items: bool) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020) of unit-norm anchors against others.

  For anchor i with positives P(i) (the others of its class):
    l_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip / T) / sum_a exp(s_ia / T)),
  s = cosine similarity, a over every other item. With `same_items` the others are
  the anchors themselves and each anchor is left out of its own sums (the intra-modal
  loss). The mean is over the anchors that have a positive.
  """
  logits_NxM = anchor_NxK @ other_MxK.T / temperature
  positive_NxM = anchor_class_N[:, None] == other_class_M[None, :]
  if same_items:
    self_NxM = jnp.eye(*logits_NxM.shape, dtype=bool)
    logits_NxM = jnp.where(self_NxM, -jnp.inf, logits_NxM)
    positive_NxM &= ~self_NxM
  log_prob_NxM = jax.nn.log_softmax(logits_NxM, axis=1)
  count_N = positive_NxM.sum(axis=1)
  loss_N = -jnp.where(positive_NxM, log_prob_NxM, 0.0).sum(axis=1) / jnp.maximum(count_N, 1)
  has_positive_N = count_N > 0
  return jnp.sum(jnp.where(has_positive_N, loss_N, 0.0)) / jnp.maximum(has_positive_N.sum(), 1)


def emo_clim_loss(image_BxK: jax.Array, music_BxK: jax.Array, image_class_B: jax.Array,
                  music_class_B: jax.Array, temperature: float,
                  weights: tuple[float, float, float, float]) -> jax.Array:
  """Weighted sum of the image-image, music-music, image->music and music->image SupCon losses."""
  terms = (
      supcon_loss(image_BxK, image_BxK, image_class_B, image_class_B, temperature, same_items=True),
      supcon_loss(music_BxK, music_BxK, music_class_B, music_class_B, temperature, same_items=True),
      supcon_loss(image_BxK, music_BxK, image_class_B, music_class_B, temperature,
                  same_items=False),
      supcon_loss(music_BxK, image_BxK, music_class_B, image_class_B, temperature,
                  same_items=False))
  return sum(w * term for w, term in zip(weights, terms))


def sigmoid_loss(image_BxK: jax.Array, music_BxK: jax.Array, image_class_B: jax.Array,
                 music_class_B: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array
                 ) -> jax.Array:
  """SigLIP's loss: -1/B sum_ij log sigmoid(z_ij (exp(t) s_ij + b)), z_ij = +1 iff same class."""
  logits_BxB = jnp.exp(logit_scale) * image_BxK @ music_BxK.T + logit_bias
  sign_BxB = jnp.where(image_class_B[:, None] == music_class_B[None, :], 1.0, -1.0)
  return -jnp.sum(jax.nn.log_sigmoid(sign_BxB * logits_BxB)) / image_BxK.shape[0]


def best_cut(score_P: jax.Array, label_P: jax.Array) -> jax.Array:
  """The cut c maximising the accuracy of 'match iff score > c' on the pairs.

  Candidates lie between consecutive distinct sorted scores (and below or above them
  all); the midpoint of the best gap is returned, the lowest such gap on a tie.
  """
  order_P = jnp.argsort(score_P)
  sorted_P, label_P = score_P[order_P], label_P[order_P]
  num = score_P.shape[0]
  # Cutting before sorted row k: rows < k say 'no match', rows >= k 'match'.
  correct_K = (jnp.concatenate([jnp.zeros(1), jnp.cumsum(1 - label_P)])
               + jnp.concatenate([jnp.cumsum(label_P[::-1])[::-1], jnp.zeros(1)]))
  distinct_K = jnp.concatenate([jnp.ones(1, bool), sorted_P[1:] > sorted_P[:-1],
                                jnp.ones(1, bool)])
  k = jnp.argmax(jnp.where(distinct_K, correct_K, -1))
  below = sorted_P[jnp.maximum(k - 1, 0)] - jnp.where(k == 0, 1.0, 0.0)
  above = sorted_P[jnp.minimum(k, num - 1)] + jnp.where(k == num, 1.0, 0.0)
  return (below + above) / 2


@dataclasses.dataclass(frozen=True)
class Correspondence:
  """ACP-Net's pair cross-entropy; the decision is the argmax of the two logits.

  With `class_loss_weight` > 0 (not the paper's), the loss adds that weight times each
  tower's class cross-entropy on the pair's items (the model's class heads). The pair
  label says whether two classes agree: an MLP on the concatenated embeddings has to
  learn that as an interaction of towers that know no class yet, and with weak class
  cues it sits at a constant answer (loss ln 2) where a linear model finds the classes.
  The class loss gives each tower a first-order class signal to start from.
  """
  name: ClassVar[str] = "correspondence"
  class_loss_weight: float = 0.0

  def sample(self, key: jax.Array, tables: pairs.Tables, batch_size: int) -> Sample:
    """Balanced true/false pairs; the target is the pair label (B) or, with the class loss,
    (pair label, image class, music class) of each row (Bx3)."""
    image_B, music_B, label_B = pairs.sample_pairs(key, tables, batch_size)
    if not self.class_loss_weight:
      return image_B, music_B, label_B
    return image_B, music_B, jnp.stack(
        [label_B, tables.image_labels_N[image_B], tables.music_labels_M[music_B]], axis=-1)

  def loss(self, model: Any, variables: dict, image_BxD: jax.Array, music_BxD: jax.Array,
           target_B: jax.Array, dropout_key: jax.Array
           ) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """(loss, (in-batch accuracy, updated batch_stats))."""
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels
    kwargs = dict(train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    if not self.class_loss_weight:
      logits_Bx2, updated = model.apply(variables, image_BxD, music_BxD, **kwargs)
      label_B, loss = target_B, cross_entropy(logits_Bx2, target_B).mean()
    else:
      (logits_Bx2, image_BxC, music_BxC), updated = model.apply(
          variables, image_BxD, music_BxD, method="logits_and_classes", **kwargs)
      label_B = target_B[:, 0]
      loss = cross_entropy(logits_Bx2, label_B).mean() + self.class_loss_weight * (
          cross_entropy(image_BxC, target_B[:, 1]).mean()
          + cross_entropy(music_BxC, target_B[:, 2]).mean())
    return loss, (jnp.mean(jnp.argmax(logits_Bx2, -1) == label_B), updated["batch_stats"])

  def choose_cut(self, score_P: jax.Array, label_P: jax.Array) -> jax.Array:
    return jnp.zeros(())

  def calibrate(self, batch_stats: Any, cut_S: jax.Array) -> Any:
    return batch_stats


@dataclasses.dataclass(frozen=True)
class _Contrastive:
  """Batches of items, each image with a music item of its class, scored by cosine."""

  def sample(self, key: jax.Array, tables: pairs.Tables, batch_size: int) -> Sample:
    """Images with music of their class; the target is the class of both."""
    return pairs.sample_items(key, tables, batch_size)

  def loss(self, model: Any, variables: dict, image_BxD: jax.Array, music_BxD: jax.Array,
           class_B: jax.Array, dropout_key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """(loss, (in-batch accuracy, updated batch_stats)).

    The accuracy is image->music top-1 within the batch: the music most similar to
    each image shares its class.
    """
    (image_BxK, music_BxK), updated = model.apply(
        variables, image_BxD, music_BxD, train=True, rngs={"dropout": dropout_key},
        mutable=["batch_stats"], method="project_items")
    loss = self.batch_loss(variables["params"], image_BxK, music_BxK, class_B)
    nearest_B = jnp.argmax(image_BxK @ music_BxK.T, axis=1)
    return loss, (jnp.mean(class_B[nearest_B] == class_B), updated["batch_stats"])

  def batch_loss(self, params: dict, image_BxK: jax.Array, music_BxK: jax.Array,
                 class_B: jax.Array) -> jax.Array:
    raise NotImplementedError

  def choose_cut(self, score_P: jax.Array, label_P: jax.Array) -> jax.Array:
    return best_cut(score_P, label_P)

  def calibrate(self, batch_stats: Any, cut_S: jax.Array) -> Any:
    """Moves each seed's threshold by its cut: scores are cosine - threshold."""
    return {**batch_stats, models.THRESHOLD: batch_stats[models.THRESHOLD] + cut_S}


@dataclasses.dataclass(frozen=True)
class SupCon(_Contrastive):
  name: ClassVar[str] = "supcon"
  temperature: float
  weights: tuple[float, float, float, float]

  def batch_loss(self, params, image_BxK, music_BxK, class_B):
    return emo_clim_loss(image_BxK, music_BxK, class_B, class_B, self.temperature, self.weights)


@dataclasses.dataclass(frozen=True)
class Sigmoid(_Contrastive):
  name: ClassVar[str] = "sigmoid"

  def batch_loss(self, params, image_BxK, music_BxK, class_B):
    return sigmoid_loss(image_BxK, music_BxK, class_B, class_B, params["logit_scale"],
                        params["logit_bias"])


Objective = Correspondence | SupCon | Sigmoid

NAMES = (Correspondence.name, SupCon.name, Sigmoid.name)


def create_objective(config: ml_collections.ConfigDict) -> Objective:
  """The objective named by `config.objective`; built once per run (acp_jax/train.py) or
  restored run (acp_jax/evaluate.py) and handed to what needs it."""
  name = config.objective
  if name == "correspondence":
    return Correspondence(class_loss_weight=config.class_loss_weight)
  if name == "supcon":
    return SupCon(temperature=config.temperature, weights=tuple(config.supcon_weights))
  if name == "sigmoid":
    if config.logit_scale_init is None:
      raise ValueError("config.objective='sigmoid' learns a temperature: set "
                       "config.logit_scale_init (SigLIP: log 10) and config.logit_bias_init")
    return Sigmoid()
  raise ValueError(f"unknown config.objective {name!r}; known: {list(NAMES)}")
