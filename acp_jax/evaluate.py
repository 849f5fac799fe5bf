"""Evaluation of a trained model, run the same way at the end of training and on a checkpoint.

`config.evals` lists the evaluators: `{name: options}`, where an entry's `type`
(default: its name) is a module of acp_jax/evaluators and the other fields are its
options. `evaluate_run` runs them on a `Subject` (the model's seeds and its splits) in
the order of EVALUATORS, times each, and writes what they return: results.json,
report.md, report.html, figures/ and gallery/ (acp_jax/report.py lays them out). The training loop's
validation scores the validation pairs as the `pairs` evaluator scores the test pairs
(evaluators/common.py), to stop early.

`run` is the evaluate job of launch.py (configs/evaluate.py, configs/probe.py): restore
the best checkpoint of a run (`restore`) and evaluate it again, with any evaluators.
"""

import json
import time
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np

from acp_jax import UserError
from acp_jax import checkpoint
from acp_jax import data
from acp_jax import feeds
from acp_jax import inputs
from acp_jax import items
from acp_jax import models
from acp_jax import objectives
from acp_jax import report
from acp_jax.evaluators import common
from acp_jax.evaluators import figures
from acp_jax.evaluators import pairs
from acp_jax.evaluators import probes
from acp_jax.evaluators import retrieval

# An evaluator's `type` -> its class; a new evaluator is a module of acp_jax/evaluators
# with an `Evaluator(options)` whose `run(subject)` returns a `common.Evaluation`.
EVALUATORS = {"pairs": pairs.Evaluator, "retrieval": retrieval.Evaluator,
              "probes": probes.Evaluator, "figures": figures.Evaluator}


def create_evaluators(evals: ml_collections.ConfigDict) -> dict[str, Any]:
  """{name: evaluator} of `config.evals`, in the order of their types in EVALUATORS (a
  ConfigDict keeps no order of its own)."""
  kinds = {name: options.get("type", name) for name, options in evals.items()}
  for name, kind in kinds.items():
    if kind not in EVALUATORS:
      raise UserError(f"config.evals.{name}: unknown evaluator type {kind!r}; known: "
                      f"{list(EVALUATORS)}")
  order = sorted(kinds, key=lambda name: (list(EVALUATORS).index(kinds[name]), name))
  return {name: EVALUATORS[kinds[name]](ml_collections.ConfigDict(
      {k: v for k, v in evals[name].items() if k != "type"})) for name in order}


def evaluate_run(subject: common.Subject, results: dict[str, Any],
                 evals: ml_collections.ConfigDict, out_dir: epath.PathLike, compare: str,
                 phases_s: dict[str, float]) -> dict[str, Any]:
  """Runs the evaluators on `subject` and writes the report; returns the results written.

  Args:
    subject: the model evaluated.
    results: what is known of the run already (dataset, model, steps, ...).
    evals: `config.evals`.
    out_dir: where results.json, report.md, report.html, figures/ and gallery/ go
      (written by process 0).
    compare: other runs' workdirs, comma-separated: their Table 4 rows join this one's.
    phases_s: the seconds of the phases before, to which each evaluator's and the
      report's are added (`phases_s` in results.json).
  """
  figures_by_caption, notes, phases_s = {}, [], dict(phases_s)
  results = dict(results)
  for name, evaluator in create_evaluators(evals).items():
    start = time.perf_counter()
    evaluation = evaluator.run(subject)
    phases_s[name] = time.perf_counter() - start
    results.update(evaluation.results)
    figures_by_caption.update(evaluation.figures)
    notes += evaluation.notes
  start = time.perf_counter()
  results["models"] = report.table4_rows(results, compare)
  results["analysed_model"] = subject.description
  if notes:
    results["degenerate"] = notes
  if jax.process_index() == 0:
    report.write_report(results, out_dir, figures_by_caption)
  phases_s["report"] = time.perf_counter() - start
  results["phases_s"] = phases_s
  if jax.process_index() == 0:
    report.write_results(results, out_dir)
  return results


def restore(workdir: epath.PathLike, *, dataset: str | None = None,
            data_dir: str | None = None, seed: int | None = None,
            figures_dir: epath.Path | None = None,
            splits: dict[str, items.Split] | None = None) -> common.Subject:
  """Every seed of the run in `workdir` at its best checkpoint, with its dataset's splits.

  Args:
    workdir: a training run's workdir.
    dataset: None, or the dataset the caller expects the run to be of.
    data_dir: TFDS data dir; None: the run's.
    seed: index of the seed analysed; None: the best by validation accuracy.
    figures_dir: where the evaluators draw; None: nowhere.
    splits: the splits the run trained on; None: its dataset's (`data.load_splits`).

  Raises:
    UserError: no checkpoint in `workdir`, a run of another dataset than `dataset`, a
      dataset rebuilt with other encoders or pairs since the run (`check_dataset`), a
      seed out of range, or params that do not fit the model its config.json
      describes (an edited config.json, another version).
  """
  best = checkpoint.load_best(workdir)
  config = best.config
  if dataset is not None and dataset != config.dataset:
    raise UserError(f"{workdir} holds a run on {config.dataset}, not {dataset}; use a run of "
                    f"{dataset} or leave --config.dataset unset")
  num_seeds = len(best.val_accuracy_S)
  if seed is not None and not 0 <= seed < num_seeds:
    raise UserError(f"seed index {seed} is out of range: the run trained {num_seeds} seed(s), "
                    f"0 to {num_seeds - 1}")
  if splits is None:
    splits = data.load_splits(config.dataset, data_dir or config.data_dir)
  checkpoint.check_dataset(workdir, splits)
  module, objective = models.create_model(config), objectives.create_objective(config)
  mesh = inputs.make_mesh(config.batch_size)
  feed = feeds.create_feed(config, splits, mesh, objective,
                           (best.image_standardizer, best.music_standardizer))
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            *(np.zeros((1, *shape), np.float32) for shape in feed.item_shapes))
  saved = {"params": best.params, "batch_stats": best.batch_stats}
  shapes = lambda tree, skip: jax.tree.map(lambda x: tuple(x.shape[skip:]), tree)
  if shapes(saved, 1) != shapes({"batch_stats": {}, **expected}, 0):  # without the seed axis
    fields = ", ".join(f"{k}={config[k]}" for k in checkpoint.STATE_FIELDS if k in config)
    raise UserError(
        f"the checkpoint in {workdir} does not match its config.json ({fields}): the saved "
        "params have other layers or shapes. Restore the run's config.json, or train again.")
  return common.Subject(
      config=config, module=module, objective=objective, feed=feed,
      variables_S=inputs.replicate(saved, mesh), val_accuracy_S=best.val_accuracy_S,
      best_step_S=best.step_S, splits=splits, run_dir=epath.Path(workdir),
      figures_dir=figures_dir, seed=-1 if seed is None else seed)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The evaluate job: `config.evals` on the best checkpoint of `config.checkpoint_dir`.

  Writes results.json (the run's own, with what the evaluators return), report.md,
  report.html, figures/ and gallery/ to `workdir`, and returns the results.
  """
  if not config.checkpoint_dir:
    raise UserError("set --config.checkpoint_dir to the workdir of a trained run")
  start = time.perf_counter()
  run_dir, out_dir = epath.Path(config.checkpoint_dir), epath.Path(workdir)
  subject = restore(run_dir, dataset=config.dataset, data_dir=config.data_dir,
                    seed=config.seed_index,
                    figures_dir=out_dir / report.FIGURES_DIR if jax.process_index() == 0 else None)
  run_results = run_dir / "results.json"
  base = (json.loads(run_results.read_text()) if run_results.exists()
          else {"dataset": subject.config.dataset, "model": subject.config.model,
                "objective": subject.config.objective})
  base.pop("phases_s", None)  # the training's; this job has its own
  base.pop("gallery", None)  # its files lie in the run's folder; a figures evaluator makes one here
  try:
    results = evaluate_run(subject, {**base, "checkpoint_dir": str(run_dir)}, config.evals,
                           out_dir, config.report.compare,
                           {"restore": time.perf_counter() - start})
  finally:
    subject.feed.close()
  if jax.process_index() == 0:
    print(report.summary(results, out_dir))
  return results
