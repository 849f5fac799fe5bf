"""The analysis a run ends with, written as its report (acp_jax/report.py draws and writes).

A training run (`train.train_and_evaluate`, its own best model, `best_model`) and a
probe run (`probe.run`, a restored checkpoint) both end in `report_run`, on the test split:

  * retrieval: every test music segment ranks every test image by match log-odds,
    and the reverse (`retrieval.evaluate_retrieval`), with chance levels; a training
    run's macro figures are the mean and std over its seeds;
  * figures: the run's learning curves, the correspondence confusion matrix on the
    fixed test pairs, t-SNE maps of both towers' embeddings, a Fig.-3 gallery;
  * Table 4 and the retrieval table: this run's row, plus the rows of the runs listed
    in `report.compare` (other models or objectives).

The gallery shows the images when it can find them: the pixels of a media config, the
files under `report.image_dir`, or the generated corpus of a synthetic config; else
coloured placeholders, and its title says so.
"""

from collections.abc import Callable, Mapping, Sequence
import json
from typing import Any

from etils import epath
import flax.linen as nn
import jax
import ml_collections
import numpy as np
from sklearn.metrics import confusion_matrix
import tensorflow_datasets as tfds

from acp_jax import MissingInputError
from acp_jax import UserError
from acp_jax import data
from acp_jax import inference
from acp_jax import labels
from acp_jax import pairs
from acp_jax import report
from acp_jax import retrieval
from acp_jax.features import media
from tfds_imac.imac import imac_dataset_builder

FIGURES_DIR = "figures"
# Series of metrics.jsonl drawn as learning curves (pairs_per_second would crush the scale).
_CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
# A Table 4 row: these and their `_std` siblings.
_ROW_KEYS = ("test_accuracy", "test_auc")
_KS = (1, 5, 10)
_THUMBNAIL = 160  # gallery pixels per side


def image_dir(options: ml_collections.ConfigDict, dataset: str,
              data_dir: str | None) -> epath.Path | None:
  """Root of `images/<emotion>/<name>.<ext>` for the gallery, or None if there is none."""
  if options.image_dir:
    return epath.Path(options.image_dir)
  builder = tfds.builder(dataset, data_dir=data_dir)
  if builder.builder_config.synthetic is None:
    return None
  root = imac_dataset_builder.synthetic_corpus_dir(builder.data_dir_root / "downloads",
                                                   builder.builder_config.synthetic)
  return root if root.exists() else None


def _image_loader(images: data.Items,
                  root: epath.Path | None) -> Callable[[int], np.ndarray | None] | None:
  """Image i's pixels: from a media config's records, else the file `root/images/<id>`, else None."""
  if images.source is not None:
    return lambda i: images.source[i]["pixels"]
  if root is None:
    return None
  return lambda i: media.load_image(root / "images" / images.ids[i], _THUMBNAIL, 1)[0]


def learning_curves(run_dir: epath.PathLike, out_dir: epath.PathLike) -> dict[str, epath.Path]:
  """The run's training and validation curves from its metrics.jsonl (none if absent)."""
  path = epath.Path(run_dir) / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
  history = [{"step": row["step"], **{k: row[k] for k in _CURVES if k in row}} for row in rows]
  history = [row for row in history if len(row) > 1]
  if not history:
    return {}
  figure = epath.Path(out_dir) / FIGURES_DIR / "learning_curves.png"
  report.plot_learning_curves(history, figure, title="Correspondence training (mean over seeds)")
  return {"Learning curves": figure}


def _row(results: Mapping) -> dict[str, Any]:
  keys = [k for key in _ROW_KEYS for k in (key, f"{key}_std", f"{key}_ci95")] + ["test_pairs"]
  return {k: results[k] for k in keys if k in results}


def table4_rows(results: Mapping, compare: str) -> dict[str, dict[str, Any]]:
  """Table 4 rows by `report.row_key`: the runs in `compare` (comma-separated workdirs),
  each with its `retrieval`, then this run's (its retrieval is the report's own).

  Raises UserError for a run of another dataset or other fixed pairs (pair fingerprints).
  """
  rows = {}
  for run in filter(None, (d.strip() for d in compare.split(","))):
    path = epath.Path(run) / "results.json"
    if not path.exists():
      raise MissingInputError(f"report.compare names {run}, which has no results.json; train "
                              "that run first or leave it out")
    other = json.loads(path.read_text())
    for key, what in (("dataset", "dataset"), ("pair_fingerprint", "fixed pairs")):
      if other.get(key) != results.get(key):
        raise UserError(
            f"report.compare names {run}, a run on other {what} ({key} {other.get(key)} there, "
            f"{results.get(key)} here): its accuracy is not comparable. Compare runs on the "
            "same dataset build, or leave it out.")
    rows[report.row_key(other)] = {**_row(other), "retrieval": other.get("retrieval")}
  rows[report.row_key(results)] = _row(results)
  return rows


def _retrieval(model: inference.Model, test: data.Split, options: ml_collections.ConfigDict
               ) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
  """(retrieval metrics, music x image scores, image and music embeddings) on the test split."""
  image_NxE, music_MxE = model.embed(test)
  score_MxI = model.scores(music_MxE, image_NxE, options.score_block)
  # Precision at k needs k keys; a tiny split keeps the cut-offs it can.
  ks = tuple(k for k in _KS if k <= min(score_MxI.shape))
  metrics = retrieval.evaluate_retrieval(score_MxI, test.music.labels_N, test.images.labels_N,
                                         len(labels.CLASSES), ks)
  return metrics, score_MxI, image_NxE, music_MxE


def over_seeds(per_seed: Sequence[dict], analysed: dict) -> dict:
  """`analysed`'s retrieval with each macro metric the mean over `per_seed`, `_std` beside it."""
  out = {}
  for direction, metrics in analysed.items():
    out[direction] = dict(metrics)
    for name, value in metrics.items():
      if isinstance(value, float):
        values = [seed[direction][name] for seed in per_seed]
        out[direction][name] = float(np.mean(values))
        out[direction][f"{name}_std"] = float(np.std(values, ddof=1))
  return out


def _analyse(model: inference.Model, test: data.Split, options: ml_collections.ConfigDict,
             figures_dir: epath.Path, images_root: epath.Path | None
             ) -> tuple[dict, dict[str, epath.Path], list[str]]:
  """(retrieval metrics, figures by caption, notes on what is degenerate) of one model on
  the test split."""
  metrics, score_MxI, image_NxE, music_MxE = _retrieval(model, test, options)
  figures, notes = {}, []

  # Log-odds above 0 is the argmax of the two logits: the model's prediction.
  pair_score_P = score_MxI[test.pairs.music_P, test.pairs.image_P]
  if len(np.unique(test.pairs.labels_P)) < 2:
    notes.append(f"the {len(test.pairs.labels_P)} test pairs are all "
                 f"{'true' if test.pairs.labels_P[0] else 'false'} correspondences: AUC is "
                 "undefined and accuracy measures one answer only")
  if len(np.unique(pair_score_P > 0)) < 2:
    notes.append(f"the model answers {'match' if pair_score_P[0] > 0 else 'no match'} for "
                 "every test pair")
  confusion = confusion_matrix(test.pairs.labels_P, pair_score_P > 0, labels=[0, 1])
  figures["Correspondence on the fixed test pairs"] = figures_dir / "confusion_pairs.png"
  report.plot_confusion(confusion, ("false", "true"), figures_dir / "confusion_pairs.png",
                        "Correspondence, fixed test pairs")

  if test.images.emotions_N is not None:
    image_colours_N, image_names = test.images.emotions_N, labels.EMOTIONS
  else:
    image_colours_N, image_names = test.images.labels_N, labels.CLASSES
  maps = (("image", image_NxE, image_colours_N, image_names),
          ("music", music_MxE, test.music.labels_N, labels.CLASSES))
  for name, emb_NxE, colours_N, names in maps:
    path = figures_dir / f"embedding_map_{name}.png"
    skipped = report.plot_embedding_map(emb_NxE, colours_N, names, path,
                                        f"{name.capitalize()} tower embeddings (test)",
                                        max_points=options.map_points)
    if skipped:
      notes.append(skipped)
    else:
      figures[f"2-D map of the {name} tower embeddings"] = path

  # One segment per song ('<song>#<k>' ids), so that the rows show different songs.
  songs = [music_id.rsplit("#", 1)[0] for music_id in test.music.ids]
  first = np.sort(np.unique(songs, return_index=True)[1])
  rows = report.gallery_rows(
      score_MxI[first], [test.music.ids[m] for m in first], test.music.labels_N[first],
      test.images.labels_N, test.images.emotions_N, rows_per_class=options.gallery_rows_per_class,
      top_k=min(options.gallery_top_k, len(test.images.ids)),
      image_loader=_image_loader(test.images, images_root))
  found = any(image.pixels is not None for row in rows for image in row.images)
  report.plot_gallery(rows, figures_dir / "gallery.png",
                      "Test music → top-ranked test images (score = match log-odds)"
                      + ("" if found else "\nimage files not found: see report.image_dir"))
  figures["Music and its top-ranked images (paper Fig. 3); ✓ = same emotion class"] = (
      figures_dir / "gallery.png")
  return metrics, figures, notes


def report_run(results: Mapping, out_dir: epath.PathLike, *, run_dir: epath.PathLike,
               model: inference.Model, test: data.Split, options: ml_collections.ConfigDict,
               data_dir: str | None, figures: Mapping[str, epath.Path] | None = None,
               seed_models: Sequence[inference.Model] = ()) -> dict:
  """Adds retrieval, Table 4 rows and notes on what is degenerate (`degenerate`, if
  anything is) to `results`; writes report.md, results.json, PNGs.

  Args:
    results: the run's results (see report.py), with its `dataset` and `model`.
    out_dir: where report.md, results.json and figures/ go.
    run_dir: the training run, whose metrics.jsonl gives the learning curves.
    model: the model analysed.
    test: the test split.
    options: what the report shows: a config's `report` fields (configs/acp.py).
    data_dir: TFDS data dir of `results['dataset']`.
    figures: more figures by caption, shown after the learning curves.
    seed_models: every seed of the run: retrieval is then their mean and std (the
      analysed model's per-class figures).

  Returns:
    The results as written to results.json.
  """
  out_dir = epath.Path(out_dir)
  metrics, test_figures, notes = _analyse(model, test, options, out_dir / FIGURES_DIR,
                                          image_dir(options, results["dataset"], data_dir))
  if len(seed_models) > 1:
    metrics = over_seeds([_retrieval(m, test, options)[0] for m in seed_models], metrics)
  results = {**results, "models": table4_rows(results, options.compare), "retrieval": metrics,
             "analysed_model": model.description}
  if notes:
    results["degenerate"] = notes
  report.write_report(results, out_dir, {**learning_curves(run_dir, out_dir), **(figures or {}),
                                         **test_figures})
  return results


def seed_models(config: ml_collections.ConfigDict, module: nn.Module, best_variables: dict,
                best_val_accuracy_S: Any,
                standardizers: tuple[pairs.Standardizer | None, pairs.Standardizer | None]
                ) -> list[inference.Model]:
  """Every seed's best-validation model of a run that just trained, as `report_run` takes them.

  `best_variables` ({'params', 'batch_stats'}) carry the seed axis; they may be
  replicated over processes, and this process takes a host copy on its own.
  """
  best_variables, best_val_accuracy_S = jax.device_get((best_variables, best_val_accuracy_S))
  return [inference.Model(config=config, module=module,
                          variables=jax.tree.map(lambda x, s=s: x[s], best_variables),
                          image_standardizer=standardizers[0],
                          music_standardizer=standardizers[1], seed=s,
                          num_seeds=len(best_val_accuracy_S),
                          val_accuracy=float(best_val_accuracy_S[s]))
          for s in range(len(best_val_accuracy_S))]
