"""The report's figures of the analysed seed on the test split (acp_jax/report.py draws).

  * learning curves of the training run (its metrics.jsonl);
  * the correspondence confusion matrix on the fixed test pairs;
  * t-SNE maps of both towers' embeddings (at most `map_points` points each);
  * a Fig.-3 gallery: music segments (one per song, `gallery_rows_per_class` of each
    class) and their `gallery_top_k` top-ranked test images; only those rows are scored.

The gallery shows the images when it can find them: the pixels of a media config, the
files under `image_dir`, or the generated corpus of a synthetic config; else coloured
placeholders, and its title says so.
"""

from collections.abc import Callable
import json

from etils import epath
import ml_collections
import numpy as np
from sklearn.metrics import confusion_matrix

from acp_jax import items
from acp_jax import labels
from acp_jax import report
from acp_jax.evaluators import common
from acp_jax.features import media

# Series of metrics.jsonl drawn as learning curves (pairs_per_second would crush the scale).
_CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
_THUMBNAIL = 160  # gallery pixels per side


def _image_loader(images: items.Items,
                  root: epath.Path | None) -> Callable[[int], np.ndarray | None] | None:
  """Image i's pixels: from a media config's records, else the file `root/images/<id>`, else None."""
  if images.source is not None:
    return lambda i: images.source[i]["pixels"]
  if root is None:
    return None
  return lambda i: media.load_image(root / "images" / images.ids[i], _THUMBNAIL, 1)[0]


def learning_curves(run_dir: epath.Path, figures_dir: epath.Path) -> dict[str, epath.Path]:
  """The run's training and validation curves from its metrics.jsonl (none if absent)."""
  path = run_dir / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
  history = [{"step": row["step"], **{k: row[k] for k in _CURVES if k in row}} for row in rows]
  history = [row for row in history if len(row) > 1]
  if not history:
    return {}
  figure = figures_dir / "learning_curves.png"
  report.plot_learning_curves(history, figure, title="Correspondence training (mean over seeds)")
  return {"Learning curves": figure}


class Evaluator:

  def __init__(self, options: ml_collections.ConfigDict):
    self.options = options

  def run(self, subject: common.Subject) -> common.Evaluation:
    if subject.figures_dir is None:
      return common.Evaluation()
    options, out, test = self.options, subject.figures_dir, subject.splits["test"]
    figures, notes = learning_curves(subject.run_dir, out), []

    pair_score_P = subject.pair_metrics("test")["score"][subject.seed]
    confusion = confusion_matrix(test.pairs.labels_P, pair_score_P > 0, labels=[0, 1])
    figures["Correspondence on the fixed test pairs"] = out / "confusion_pairs.png"
    report.plot_confusion(confusion, ("false", "true"), out / "confusion_pairs.png",
                          "Correspondence, fixed test pairs")

    image_NxE, music_MxE = subject.seed_embeddings("test")
    if test.images.emotions_N is not None:
      image_colours_N, image_names = test.images.emotions_N, labels.EMOTIONS
    else:
      image_colours_N, image_names = test.images.labels_N, labels.CLASSES
    maps = (("image", image_NxE, image_colours_N, image_names),
            ("music", music_MxE, test.music.labels_N, labels.CLASSES))
    for name, emb_NxE, colours_N, names in maps:
      path = out / f"embedding_map_{name}.png"
      skipped = report.plot_embedding_map(emb_NxE, colours_N, names, path,
                                          f"{name.capitalize()} tower embeddings (test)",
                                          max_points=options.map_points)
      if skipped:
        notes.append(skipped)
      else:
        figures[f"2-D map of the {name} tower embeddings"] = path

    # One segment per song ('<song>#<k>' ids), so that the rows show different songs; the
    # first `gallery_rows_per_class` of each class, scored against every test image.
    songs = [music_id.rsplit("#", 1)[0] for music_id in test.music.ids]
    first = np.sort(np.unique(songs, return_index=True)[1])
    first = np.sort(np.concatenate([
        first[test.music.labels_N[first] == c][:options.gallery_rows_per_class]
        for c in range(len(labels.CLASSES))]))
    score_MxI = subject.scores("test", options.score_block, music_M=first)
    root = epath.Path(options.image_dir) if options.image_dir else test.image_root
    rows = report.gallery_rows(
        score_MxI, [test.music.ids[m] for m in first], test.music.labels_N[first],
        test.images.labels_N, test.images.emotions_N,
        rows_per_class=options.gallery_rows_per_class,
        top_k=min(options.gallery_top_k, len(test.images.ids)),
        image_loader=_image_loader(test.images, root))
    found = any(image.pixels is not None for row in rows for image in row.images)
    report.plot_gallery(rows, out / "gallery.png",
                        "Test music → top-ranked test images (score = match log-odds)"
                        + ("" if found else "\nimage files not found: see "
                                            "config.evals.figures.image_dir"))
    figures["Music and its top-ranked images (paper Fig. 3); ✓ = same emotion class"] = (
        out / "gallery.png")
    return common.Evaluation(figures=figures, notes=notes)
