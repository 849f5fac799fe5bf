"""Cross-modal retrieval on the test split, both ways, with chance (acp_jax/retrieval.py).

Every test music segment ranks every test image by the pair score, and the reverse.
With several seeds each macro figure is the mean over them, `_std` beside it; the
per-class figures are the analysed seed's.
"""

import ml_collections

from acp_jax import labels
from acp_jax import retrieval
from acp_jax import stats
from acp_jax.evaluators import common


class Evaluator:

  def __init__(self, options: ml_collections.ConfigDict):
    self.ks, self.score_block = tuple(options.ks), options.score_block

  def run(self, subject: common.Subject) -> common.Evaluation:
    test = subject.splits["test"]

    def of_seed(seed: int) -> dict:
      score_MxI = subject.score_matrix("test", self.score_block, seed)
      # Precision at k needs k keys; a tiny split keeps the cut-offs it can.
      ks = tuple(k for k in self.ks if k <= min(score_MxI.shape))
      return retrieval.evaluate_retrieval(score_MxI, test.music.labels_N, test.images.labels_N,
                                          len(labels.CLASSES), ks)

    metrics = of_seed(subject.seed)
    if subject.num_seeds > 1:
      metrics = stats.over_seeds([of_seed(s) for s in range(subject.num_seeds)], metrics)
    return common.Evaluation(results={"retrieval": metrics})
