"""Cross-modal retrieval on the test split, both ways, with chance (acp_jax/retrieval.py).

Test music segments rank every test image by the pair score, and test images rank
every test segment. A pair runs the rest of the fusion head, so a direction costs
queries x keys: at most `max_queries` queries of each direction (a seeded sample,
`queries` in results.json says how many) keep it linear in the split's size. With
several seeds each macro figure is the mean over them, `_std` beside it; the
per-class figures are the analysed seed's.
"""

import ml_collections
import numpy as np

from acp_jax import labels
from acp_jax import retrieval
from acp_jax import stats
from acp_jax.evaluators import common


def sample_queries(num: int, max_queries: int | None, seed: int) -> np.ndarray | None:
  """Sorted indices of at most `max_queries` of `num` queries; None for all of them."""
  if max_queries is None or num <= max_queries:
    return None
  return np.sort(np.random.default_rng(seed).choice(num, max_queries, replace=False))


class Evaluator:

  def __init__(self, options: ml_collections.ConfigDict):
    self.ks, self.score_block = tuple(options.ks), options.score_block
    self.max_queries, self.seed = options.max_queries, options.seed

  def run(self, subject: common.Subject) -> common.Evaluation:
    test = subject.splits["test"]
    music_M = sample_queries(len(test.music.ids), self.max_queries, self.seed)
    image_N = sample_queries(len(test.images.ids), self.max_queries, self.seed + 1)
    pick = lambda labels_N, rows: labels_N if rows is None else labels_N[rows]

    def of_seed(seed: int) -> dict:
      music_to_image_QxI = subject.scores("test", self.score_block, seed, music_M=music_M)
      if music_M is None:  # every music x image pair is scored already
        image_to_music_QxM = pick(music_to_image_QxI.T, image_N)
      else:
        image_to_music_QxM = subject.scores("test", self.score_block, seed, image_N=image_N).T
      # Precision at k needs k keys; a tiny split keeps the cut-offs it can.
      ks = tuple(k for k in self.ks
                 if k <= min(len(test.music.ids), len(test.images.ids)))
      return {"music_to_image": retrieval.evaluate_direction(
                  music_to_image_QxI, pick(test.music.labels_N, music_M), test.images.labels_N,
                  len(labels.CLASSES), ks),
              "image_to_music": retrieval.evaluate_direction(
                  image_to_music_QxM, pick(test.images.labels_N, image_N), test.music.labels_N,
                  len(labels.CLASSES), ks)}

    metrics = of_seed(subject.seed)
    if subject.num_seeds > 1:
      metrics = stats.over_seeds([of_seed(s) for s in range(subject.num_seeds)], metrics)
    return common.Evaluation(results={"retrieval": metrics})
