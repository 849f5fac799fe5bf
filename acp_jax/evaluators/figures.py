"""The report's figures of the analysed seed on the test split (acp_jax/report.py draws).

  * learning curves of the training run (its metrics.jsonl);
  * the correspondence confusion matrix on the fixed test pairs;
  * t-SNE maps of both towers' embeddings (at most `map_points` points each);
  * the listening gallery (acp_jax/gallery.py), results.json's `gallery`: music segments
    (one per song, `gallery_rows_per_class` of each class) and their `gallery_top_k`
    top-ranked test images, and as many images and their top-ranked segments; only those
    rows are scored. Its music rows are also the Fig.-3 gallery PNG.

The gallery shows and plays the items when it can find their media: a media config's
records, the files under `media.manual_dir`, or the generated corpus of a synthetic
config; else ids, placeholders, and a note that says why.
"""

import json

from etils import epath
import ml_collections
import numpy as np
from sklearn.metrics import confusion_matrix

from acp_jax import gallery
from acp_jax import labels
from acp_jax import report
from acp_jax.evaluators import common

# Series of metrics.jsonl drawn as learning curves (pairs_per_second would crush the scale).
_CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


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

    # Music queries of different songs ('<song>#<k>' ids), each scored against every test
    # image, and image queries against every test segment.
    listening = gallery.Gallery({"test": test}, out.parent, options.media)
    per_class, top_k = options.gallery_rows_per_class, options.gallery_top_k
    songs_M = np.array([music_id.rsplit("#", 1)[0] for music_id in test.music.ids])
    music_Q = gallery.pick_queries(test.music.labels_N, per_class, songs_M)
    image_Q = gallery.pick_queries(test.images.labels_N, per_class)
    rows = {"music_to_image": listening.rank(
                "test", "music", music_Q,
                subject.scores("test", options.score_block, music_M=music_Q), top_k),
            "image_to_music": listening.rank(
                "test", "image", image_Q,
                subject.scores("test", options.score_block, image_N=image_Q).T, top_k)}
    found = any(image["file"] for row in rows["music_to_image"] for image in row["matches"])
    report.plot_gallery(rows["music_to_image"], out.parent, out / "gallery.png",
                        "Test music → top-ranked test images (score = match log-odds)"
                        + ("" if found else "\nimage files not found: see "
                                            "config.evals.figures.media.manual_dir"))
    figures["Music and its top-ranked images (paper Fig. 3); ✓ = same emotion class"] = (
        out / "gallery.png")
    return common.Evaluation(results={"gallery": {"notes": listening.notes, **rows}},
                             figures=figures, notes=notes)
