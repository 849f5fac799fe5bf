"""Correspondence on the fixed test pairs: accuracy and ROC-AUC with error bars (Table 4).

Several seeds: `<key>_std` (sample std, ddof=1), `<key>_ci95` (t interval of the mean
over seeds) and `per_seed`. One seed: `<key>_ci95` for test accuracy and AUC is a
percentile bootstrap over the test pairs. `interval` says which. The validation
accuracy and best step are each seed's at its best checkpoint. `test_chance` is the
accuracy of one answer for every pair, the more frequent label's share (0.5: balanced).
"""

import ml_collections
import numpy as np

from acp_jax import stats
from acp_jax.evaluators import common


class Evaluator:

  def __init__(self, options: ml_collections.ConfigDict):
    self.bootstrap_resamples = options.bootstrap_resamples

  def run(self, subject: common.Subject) -> common.Evaluation:
    test, split = subject.pair_metrics("test"), subject.splits["test"]
    label_P = split.pairs.labels_P
    per_seed = [{"test_accuracy": float(test["accuracy"][s]),
                 "test_auc": stats.auc(label_P, test["match_prob"][s]),
                 "val_accuracy": float(subject.val_accuracy_S[s]),
                 "best_step": int(subject.best_step_S[s])} for s in range(subject.num_seeds)]
    results = {"test_pairs": len(label_P),
               "test_chance": float(max(label_P.mean(), 1 - label_P.mean())),
               "validation_pairs": len(subject.splits["validation"].pairs.labels_P)}
    for key in per_seed[0]:
      values = [row[key] for row in per_seed]
      if None in values:
        results[key] = None
        continue
      results[key] = values[0] if len(values) == 1 else float(np.mean(values))
      if len(values) > 1:
        results[f"{key}_std"] = float(np.std(values, ddof=1))
        if key != "best_step":
          results[f"{key}_ci95"] = stats.t_interval(np.asarray(values))
    if subject.num_seeds > 1:
      results["interval"] = (f"95% t interval of the mean over {subject.num_seeds} seeds; ± is "
                             "the sample std (ddof=1)")
      results["per_seed"] = per_seed
    else:
      for key, interval in stats.bootstrap_interval(label_P, test["match_prob"][0],
                                                    self.bootstrap_resamples,
                                                    subject.config.seed).items():
        results[f"{key}_ci95"] = interval
      results["interval"] = (f"95% percentile bootstrap over the {len(label_P)} test pairs "
                             f"({self.bootstrap_resamples} resamples); one seed")
    if split.oracle_accuracy is not None:
      results["oracle_accuracy"] = split.oracle_accuracy
    return common.Evaluation(results=results, notes=_notes(label_P, test["score"][subject.seed]))


def _notes(label_P: np.ndarray, score_P: np.ndarray) -> list[str]:
  """What makes the accuracy on these pairs degenerate, if anything."""
  notes = []
  if len(np.unique(label_P)) < 2:
    notes.append(f"the {len(label_P)} test pairs are all "
                 f"{'true' if label_P[0] else 'false'} correspondences: AUC is "
                 "undefined and accuracy measures one answer only")
  if len(np.unique(score_P > 0)) < 2:
    notes.append(f"the model answers {'match' if score_P[0] > 0 else 'no match'} for "
                 "every test pair")
  return notes
