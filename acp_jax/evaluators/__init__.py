"""Evaluators: each a module whose `Evaluator(options).run(subject)` returns an `Evaluation`.

  pairs      accuracy and ROC-AUC on the fixed test pairs, with error bars (Table 4)
  retrieval  cross-modal retrieval both ways, P@k, mAP, MRR, with chance
  probes     MLP emotion probes on the tower embeddings (Table 5)
  figures    learning curves, confusion matrix, embedding maps, the Fig.-3 gallery

`config.evals` names the ones a run or a restored checkpoint runs (acp_jax/evaluate.py);
common.py holds the `Subject` they read.
"""
