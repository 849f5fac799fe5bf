"""What every evaluator reads: the `Subject` (a trained model's seeds and its splits), and
the scoring of pairs that the loop's validation shares with them.

An evaluator (one module of this package, chosen by `config.evals`; see
acp_jax/evaluate.py) is a class built from its config entry, whose
`run(subject) -> Evaluation` returns plain numbers for results.json, figures by caption
and notes on what is degenerate. The Subject computes what several evaluators read
(embeddings, fixed-pair metrics, score matrices) once, when first asked.

A pair's score is the match log-odds, logit(true) - logit(false): it ranks like the
match probability without saturating at 1.0, where float32 probabilities would tie;
for an embedding model, the cosine similarity less its threshold.
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from acp_jax import feeds
from acp_jax import items
from acp_jax import objectives
from acp_jax import retrieval


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What an evaluator returns: results.json entries, figures by caption, degenerate notes."""
  results: dict[str, Any] = dataclasses.field(default_factory=dict)
  figures: dict[str, epath.Path] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)


def pair_metrics(model: Any, objective: objectives.Objective, variables: dict,
                 image_NxE: jax.Array, music_MxE: jax.Array, fixed: dict) -> dict:
  """{'loss', 'accuracy', 'score', 'match_prob', 'cut', 'accuracy_at_cut'} of the fixed pairs,
  from their items' embeddings.

  'score' is each pair's log-odds and 'accuracy' the model's own decision (score > 0);
  'cut' is the best shift of its threshold on these pairs by `objective.choose_cut` (0
  for ACP-Net), and 'accuracy_at_cut' the accuracy with it.
  """
  logits_Px2 = model.apply(variables, image_NxE[fixed["image_P"]], music_MxE[fixed["music_P"]],
                           method="fuse")
  label_P = fixed["label_P"]
  score_P = logits_Px2[:, 1] - logits_Px2[:, 0]  # > 0 iff the argmax says 'match'
  cut = objective.choose_cut(score_P, label_P)
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits_Px2, label_P).mean(),
          "accuracy": jnp.mean((score_P > 0) == label_P), "score": score_P,
          "match_prob": jax.nn.softmax(logits_Px2)[:, 1],
          "cut": cut, "accuracy_at_cut": jnp.mean((score_P > cut) == label_P)}


def make_pair_scorer(model: Any, objective: objectives.Objective
                     ) -> Callable[[dict, jax.Array, jax.Array, dict], dict]:
  """(variables_S, image_SxNxE, music_SxMxE, fixed pairs) -> `pair_metrics` of every seed."""
  return jax.jit(jax.vmap(functools.partial(pair_metrics, model, objective), (0, 0, 0, None)))


@functools.partial(jax.jit, static_argnames=("module", "method"))
def _apply(module: nn.Module, variables: dict, x_NxD: jax.Array, method: str) -> jax.Array:
  return module.apply(variables, x_NxD, method=method)


@functools.cache
def _pair_log_odds(module: nn.Module) -> Callable[..., jax.Array]:
  """`(variables, music_BxH, image_BxH) -> B` log-odds of projected embeddings (H), one
  function (and compiled program) per module."""

  def log_odds(variables: dict, music_BxH: jax.Array, image_BxH: jax.Array) -> jax.Array:
    logits_Bx2 = module.apply(variables, image_BxH, music_BxH, method="fuse_projected")
    return logits_Bx2[:, 1] - logits_Bx2[:, 0]

  return log_odds


def match_scores(module: nn.Module, variables: dict, music_MxE: np.ndarray,
                 image_NxE: np.ndarray, block: int) -> np.ndarray:
  """score_MxN, the match log-odds of every (music, image) pair of tower embeddings.

  Each embedding is projected through its half of the fusion head's first layer once;
  only the rest of the head runs per pair (`block` pairs per call).
  """
  music_MxH = _apply(module, variables, music_MxE, "project_music")
  image_NxH = _apply(module, variables, image_NxE, "project_image")
  score_fn = jax.tree_util.Partial(_pair_log_odds(module), variables)
  return np.asarray(retrieval.score_matrix(score_fn, music_MxH, image_NxH, block))


def _host(x: jax.Array) -> np.ndarray:
  """A host copy of a global array, gathered from every process if it is sharded over them."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


@dataclasses.dataclass
class Subject:
  """Every seed of a trained correspondence model and the splits it is evaluated on.

  Built by the training loop at its end (its best params) or from a checkpoint
  (acp_jax/evaluate.py). Every process evaluates (the embeddings are computed across
  the devices of all of them); only the one with `figures_dir` draws.
  """
  config: ml_collections.ConfigDict   # the run's
  module: nn.Module
  objective: objectives.Objective
  feed: feeds.Feed                    # reads the splits as the model was trained to
  variables_S: dict                   # every seed's best {'params', 'batch_stats'}, on device
  val_accuracy_S: np.ndarray          # each seed's best validation accuracy
  best_step_S: np.ndarray
  splits: dict[str, items.Split]
  run_dir: epath.Path                 # the training run (its metrics.jsonl)
  figures_dir: epath.Path | None      # where figures go; None: this process draws none
  seed: int = -1                      # the seed analysed where one is (-1: best validation)
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def __post_init__(self):
    if self.seed < 0:
      self.seed = int(np.argmax(self.val_accuracy_S))

  @property
  def num_seeds(self) -> int:
    return len(self.val_accuracy_S)

  @property
  def description(self) -> str:
    return (f"seed index {self.seed} of {self.num_seeds} (validation accuracy "
            f"{100 * self.val_accuracy_S[self.seed]:.2f}%)")

  def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
    if key not in self._cache:
      self._cache[key] = make()
    return self._cache[key]

  def embeddings(self, split: str) -> tuple[jax.Array, jax.Array]:
    """(image_SxNxE, music_SxMxE) of every seed, on device (`Feed.embed`)."""
    return self._cached(("embed", split),
                        lambda: self.feed.embed(self.module, self.variables_S, split))

  def seed_embeddings(self, split: str, seed: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(image_NxE, music_MxE) of one seed (default: the analysed one), on the host."""
    seed = self.seed if seed is None else seed
    every_seed = self._cached(("host", split),
                              lambda: tuple(_host(x) for x in self.embeddings(split)))
    return tuple(x_SxNxE[seed] for x_SxNxE in every_seed)

  def pair_metrics(self, split: str) -> dict[str, np.ndarray]:
    """`pair_metrics` of every seed on the split's fixed pairs: S, or S x P for the per-pair
    'score' and 'match_prob'."""
    scorer = self._cached(("scorer",), lambda: make_pair_scorer(self.module, self.objective))
    return self._cached(("pairs", split), lambda: jax.device_get(scorer(
        self.variables_S, *self.embeddings(split), self.feed.fixed[split])))

  def seed_variables(self, seed: int) -> dict:
    every_seed = self._cached(("variables",), lambda: jax.tree.map(_host, self.variables_S))
    return jax.tree.map(lambda x: x[seed], every_seed)

  def scores(self, split: str, block: int, seed: int | None = None,
             music_M: np.ndarray | None = None, image_N: np.ndarray | None = None
             ) -> np.ndarray:
    """score_MxN of a seed (default: the analysed one): the split's music segments `music_M`
    (indices; None: all) against its images `image_N` (None: all), `block` pairs a call.
    Its cost is the product of the two sides."""
    seed = self.seed if seed is None else seed
    image_NxE, music_MxE = self.seed_embeddings(split, seed)
    pick = lambda x, rows: x if rows is None else x[rows]
    return match_scores(self.module, self.seed_variables(seed), pick(music_MxE, music_M),
                        pick(image_NxE, image_N), block)
