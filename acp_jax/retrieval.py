"""Cross-modal retrieval by a pair score: score matrices, ranking metrics, chance.

Ranking one modality against the other is the application the paper names. A query
(say a music segment) ranks every key (every test image) by the model's score of
the (query, key) pair; a key is relevant when it has the query's emotion class.

Conventions:
  * Ties in score are broken by key index, lower first (a stable descending sort),
    so every metric is deterministic; continuous model scores rarely tie.
  * p@k = relevant keys among the top k, divided by k (k must not exceed the key
    count). A query with no relevant key has AP = RR = 0.
  * Metrics are computed per query, averaged within each query class, then averaged
    over the classes that have queries (macro average), so a frequent class does
    not dominate; the per-class means are kept too (Emo-CLIM's protocol reports both).
  * For an embedding model (a contrastive objective) the score is the cosine
    similarity less a constant threshold: the ranking is by cosine similarity.

One score matrix serves both directions: image->music ranking is the transpose of
music->image (`evaluate_retrieval`).
"""

from collections.abc import Callable, Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

_INT32_LIMIT = 2**31 - 1


def score_matrix(score_fn: ScoreFn, queries_QxD: jax.Array, keys_KxD: jax.Array,
                 block: int) -> jax.Array:
  """Scores of every (query, key) pair, `block` pairs per `score_fn` call.

  Args:
    score_fn: scores aligned pairs, `(q_BxD, k_BxD) -> B` (for ACP-Net the fusion
      head's match log-odds). Pass model parameters bound in a
      `jax.tree_util.Partial`: they are then traced, not baked into the program, and
      the same function with other parameters reuses the compiled program.
    queries_QxD: query embeddings.
    keys_KxD: key embeddings.
    block: pairs scored per call; peak memory grows with it.

  The cost is Q x K evaluations of `score_fn`. When its first layer is linear in
  the concatenated pair, pass each side's first-layer projection as its embedding
  and let `score_fn` add them: the widest matmul then runs Q + K times, not Q x K.

  Returns:
    score_QxK, float32.
  """
  num_q, num_k = queries_QxD.shape[0], keys_KxD.shape[0]
  if block <= 0:
    raise ValueError(f"block must be positive, got {block}")
  # Pair indices are int32 on device.
  if num_q * num_k + block > _INT32_LIMIT:
    raise ValueError(f"{num_q} x {num_k} pairs exceed int32 indexing; score the queries "
                     "in several calls and concatenate the rows.")
  if not isinstance(score_fn, jax.tree_util.Partial):
    score_fn = jax.tree_util.Partial(score_fn)
  return _score_matrix(score_fn, jnp.asarray(queries_QxD), jnp.asarray(keys_KxD), block)


@functools.partial(jax.jit, static_argnames=("block",))
def _score_matrix(score_fn: jax.tree_util.Partial, queries_QxD: jax.Array, keys_KxD: jax.Array,
                  block: int) -> jax.Array:
  num_q, num_k = queries_QxD.shape[0], keys_KxD.shape[0]
  num_pairs = num_q * num_k
  num_blocks = -(-num_pairs // block)

  def score_block(start: jax.Array) -> jax.Array:
    # The last block is padded by repeating the last pair; its scores are dropped.
    pair_B = jnp.minimum(start + jnp.arange(block), num_pairs - 1)
    return score_fn(queries_QxD[pair_B // num_k], keys_KxD[pair_B % num_k]).astype(jnp.float32)

  score_NxB = lax.map(score_block, jnp.arange(num_blocks) * block)
  return score_NxB.reshape(-1)[:num_pairs].reshape(num_q, num_k)


@functools.partial(jax.jit, static_argnames=("ks", "block"))
def _per_query_metrics(score_QxK: jax.Array, query_labels_Q: jax.Array,
                       key_labels_K: jax.Array, ks: tuple[int, ...],
                       block: int) -> dict[str, jax.Array]:
  num_q, num_k = score_QxK.shape
  num_blocks = -(-num_q // block)
  pad = num_blocks * block - num_q
  # Padding queries get label -1: no relevant key, and they are sliced off below.
  score_NxBxK = jnp.pad(score_QxK, ((0, pad), (0, 0))).reshape(num_blocks, block, num_k)
  labels_NxB = jnp.pad(query_labels_Q, (0, pad), constant_values=-1).reshape(num_blocks, block)
  rank_K = jnp.arange(1, num_k + 1, dtype=jnp.float32)

  def block_metrics(args: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
    score_BxK, labels_B = args
    # Negating before a stable ascending sort keeps tied keys in index order.
    order_BxK = jnp.argsort(-score_BxK, axis=1, stable=True)
    relevant_BxK = (key_labels_K[order_BxK] == labels_B[:, None]).astype(jnp.float32)
    hits_BxK = jnp.cumsum(relevant_BxK, axis=1)
    num_relevant_B = hits_BxK[:, -1]
    out = {f"p@{k}": hits_BxK[:, k - 1] / k for k in ks}
    out["map"] = (jnp.sum(relevant_BxK * hits_BxK / rank_K, axis=1)
                  / jnp.maximum(num_relevant_B, 1.0))
    # The first relevant key has the largest 1 / rank among the relevant ones.
    out["mrr"] = jnp.max(relevant_BxK / rank_K, axis=1)
    return out

  per_block = lax.map(block_metrics, (score_NxBxK, labels_NxB))
  return {name: value.reshape(-1)[:num_q] for name, value in per_block.items()}


def _class_means(per_query: dict[str, jax.Array], query_labels_Q: jax.Array,
                 num_classes: int) -> dict[str, list[float | None]]:
  """Mean over the queries of each class; None for a class without queries."""
  onehot_QxC = jax.nn.one_hot(query_labels_Q, num_classes, dtype=jnp.float32)
  count_C = np.asarray(onehot_QxC.sum(axis=0))
  out = {}
  for name, value_Q in per_query.items():
    mean_C = np.asarray(onehot_QxC.T @ jnp.asarray(value_Q, jnp.float32)) / np.maximum(count_C, 1)
    out[name] = [float(m) if n else None for m, n in zip(mean_C, count_C)]
  return out


def _macro_average(per_query: dict[str, jax.Array], query_labels_Q: jax.Array,
                   num_classes: int) -> dict[str, float]:
  """Mean over queries within each class, then over the classes that have queries."""
  return {name: float(np.mean([m for m in means_C if m is not None]))
          for name, means_C in _class_means(per_query, query_labels_Q, num_classes).items()}


def _check_labels(query_labels_Q: np.ndarray, key_labels_K: np.ndarray, num_classes: int,
                  ks: Sequence[int]) -> None:
  for name, values in (("query", query_labels_Q), ("key", key_labels_K)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{name} labels must lie in [0, {num_classes}), "
                       f"got [{values.min()}, {values.max()}]")
  if query_labels_Q.size == 0:
    raise ValueError("no queries to rank")
  if ks and (min(ks) < 1 or max(ks) > key_labels_K.size):
    raise ValueError(f"every k in {tuple(ks)} must lie in [1, {key_labels_K.size}] "
                     f"(the number of keys)")


def retrieval_metrics(score_QxK: jax.Array, query_labels_Q: np.ndarray,
                      key_labels_K: np.ndarray, num_classes: int,
                      ks: Sequence[int] = (1, 5, 10), *, block: int = 256) -> dict[str, float]:
  """Macro-averaged p@k, mAP and MRR of ranking keys by score, relevance = same class.

  Args:
    score_QxK: higher scores rank first.
    query_labels_Q: int class of each query.
    key_labels_K: int class of each key.
    num_classes: number of classes.
    ks: cut-offs for precision.
    block: queries ranked at once; peak memory is about `block` x K x 12 bytes.

  Returns:
    {'p@1': ..., 'p@5': ..., 'p@10': ..., 'map': ..., 'mrr': ...} as floats in [0, 1].
  """
  per_query = _ranked(score_QxK, query_labels_Q, key_labels_K, num_classes, ks, block)
  return _macro_average(per_query, jnp.asarray(query_labels_Q), num_classes)


def _ranked(score_QxK: jax.Array, query_labels_Q: np.ndarray, key_labels_K: np.ndarray,
            num_classes: int, ks: Sequence[int], block: int) -> dict[str, jax.Array]:
  """The metrics of each query, after checking the arguments."""
  query_labels_Q = np.asarray(query_labels_Q, np.int32)
  key_labels_K = np.asarray(key_labels_K, np.int32)
  if score_QxK.shape != (query_labels_Q.size, key_labels_K.size):
    raise ValueError(f"score matrix {score_QxK.shape} does not match "
                     f"{query_labels_Q.size} queries x {key_labels_K.size} keys")
  _check_labels(query_labels_Q, key_labels_K, num_classes, ks)
  return _per_query_metrics(
      jnp.asarray(score_QxK, jnp.float32), jnp.asarray(query_labels_Q), jnp.asarray(key_labels_K),
      tuple(ks), min(block, query_labels_Q.size))


def _expected_reciprocal_rank(num_relevant: int, num_keys: int) -> float:
  """E[1 / rank of the first relevant key] under a uniformly random ranking."""
  if num_relevant == 0:
    return 0.0
  ranks = np.arange(1, num_keys - num_relevant + 2)
  # P(first relevant rank > r) = prod_{j<r} (N - R - j) / (N - j): the first r keys
  # are all irrelevant.
  survival = np.concatenate(
      [[1.0], np.cumprod((num_keys - num_relevant - ranks + 1) / (num_keys - ranks + 1))])
  return float(np.sum((survival[:-1] - survival[1:]) / ranks))


def _expected_average_precision(num_relevant: int, num_keys: int) -> float:
  """E[AP] under a uniformly random ranking, exactly.

  With rel_i the relevance at rank i and H_i the hits up to i,
  AP = (1/R) sum_i rel_i H_i / i, and E[rel_i H_i] = R/N + (i-1) R (R-1) / (N (N-1)),
  which sums to E[AP] = (H_N + (R-1) (N - H_N) / (N-1)) / N, H_N the N-th harmonic
  number (Bestgen, 2015).
  """
  if num_relevant == 0:
    return 0.0
  harmonic = float(np.sum(1.0 / np.arange(1, num_keys + 1)))
  spread = (num_relevant - 1) * (num_keys - harmonic) / max(num_keys - 1, 1)
  return (harmonic + spread) / num_keys


def chance_metrics(query_labels_Q: np.ndarray, key_labels_K: np.ndarray, num_classes: int,
                   ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """Expected `retrieval_metrics` under a uniformly random ranking of the keys.

  Exact: E[p@k] = R/N (the fraction of relevant keys), E[AP] by the closed form of
  `_expected_average_precision`, E[RR] summed over the distribution of the first
  relevant rank. Relevance depends only on the query's class, so each class has one
  expected value; the classes are macro-averaged as in `retrieval_metrics`.
  """
  query_labels_Q = np.asarray(query_labels_Q, np.int32)
  key_labels_K = np.asarray(key_labels_K, np.int32)
  _check_labels(query_labels_Q, key_labels_K, num_classes, ks)
  num_keys = key_labels_K.size
  relevant_C = np.bincount(key_labels_K, minlength=num_classes)
  per_class = {f"p@{k}": relevant_C / num_keys for k in ks}
  per_class["map"] = np.array([_expected_average_precision(r, num_keys) for r in relevant_C])
  per_class["mrr"] = np.array([_expected_reciprocal_rank(r, num_keys) for r in relevant_C])
  per_query = {name: jnp.asarray(value_C[query_labels_Q]) for name, value_C in per_class.items()}
  return _macro_average(per_query, jnp.asarray(query_labels_Q), num_classes)


def evaluate_direction(score_QxK: jax.Array, query_labels_Q: np.ndarray,
                       key_labels_K: np.ndarray, num_classes: int,
                       ks: Sequence[int] = (1, 5, 10), *, block: int = 256) -> dict:
  """One retrieval direction, with chance: {'p@1', ..., 'map', 'mrr', 'chance': {same keys},
  'queries': Q, 'per_class': {'p@1': [one per class, None if no queries], ...}}."""
  per_query = _ranked(score_QxK, query_labels_Q, key_labels_K, num_classes, ks, block)
  labels_Q = jnp.asarray(query_labels_Q, jnp.int32)
  return {**_macro_average(per_query, labels_Q, num_classes),
          "chance": chance_metrics(query_labels_Q, key_labels_K, num_classes, ks),
          "queries": len(query_labels_Q),
          "per_class": _class_means(per_query, labels_Q, num_classes)}


def evaluate_retrieval(score_MxI: jax.Array, music_labels_M: np.ndarray,
                       image_labels_I: np.ndarray, num_classes: int,
                       ks: Sequence[int] = (1, 5, 10), *, block: int = 256) -> dict[str, dict]:
  """Both retrieval directions from one music x image score matrix (`evaluate_direction`):
  the report's `retrieval` entry, {'music_to_image': {...}, 'image_to_music': {...}}."""
  return {"music_to_image": evaluate_direction(score_MxI, music_labels_M, image_labels_I,
                                               num_classes, ks, block=block),
          "image_to_music": evaluate_direction(jnp.asarray(score_MxI).T, image_labels_I,
                                               music_labels_M, num_classes, ks, block=block)}
