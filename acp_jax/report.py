"""The run report: tables laid out like the paper's Tables 4 and 5, JSON, PNGs, a page.

The report only lays out what the evaluators return (acp_jax/evaluate.py). Each plot is
its own function writing one PNG (matplotlib, Agg backend), and `write_report` turns a
results dict plus those PNGs into `results.json` and two layouts of the same tables in
one directory: `report.md`, and `report.html`, a static page (templates/report.html.j2,
Jinja2 with every text escaped) that also plays the listening gallery's clips.

Results dict (every accuracy, AUC and retrieval metric a fraction in [0, 1]; any
value may carry a `<name>_std` sibling, the sample std over seeds, shown as
"mean ± std", and a `<name>_ci95` one, [low, high], shown after it):

  {
    "dataset": "imac/synthetic",        # optional, named in the header
    "pair_fingerprint": {"test": "3f2a9c0b1d4e", ...},  # optional, shown in the header
    "degenerate": ["..."],              # optional notes on what is degenerate in the run
    "test_accuracy": 0.62,              # ACP-Net on the fixed test pairs
    "test_pairs": 200,                  # optional: how many, beside the accuracy
    "interval": "95% t interval ...",   # optional: what the [low, high] intervals are
    "test_auc": 0.67,
    "val_accuracy": 0.63,               # at the best-validation checkpoint
    "test_chance": 0.5,                 # optional: one answer for every test pair
    "oracle_accuracy": 0.91,            # optional: ceiling from the synthetic cues
    "model": "acp",                     # optional: the run's row of Table 4 ("acp" if absent)
    "objective": "correspondence",      # optional; another objective's row is "acp+supcon"
    "encoders": {"image": "clip", "image_weights": "...", "music": "clap", ...},  # optional;
                                        # other features than the paper's: "acp+supcon@clip+clap"
    "models": {                         # optional Table 4 rows by `row_key`; a missing
      "acp": {"test_accuracy": ..., "test_auc": ...},   # row of the run's model falls
      "l3net": {...},                                   # back to the top level; a
      "acp+supcon": {..., "retrieval": {...}},          # compared run brings its retrieval
    },
    "analysed_model": "seed 0 of 3",    # optional: whose retrieval, probes and figures
    "probe": {                          # optional, each a `probe.train_probe` result:
      "image": {"test_accuracy", "test_balanced_accuracy", "val_accuracy", "chance",
                "majority", "num_classes", "confusion", ...},
      "music": {...},
    },
    "retrieval": {                      # optional, `retrieval.evaluate_retrieval`:
      "music_to_image": {"p@1", "p@5", "p@10", "map", "mrr", "chance": {same keys},
                         "queries": Q, "per_class": {"p@1": [per class], ...}},
      "image_to_music": {...},
    },
    "gallery": {...},                   # optional: the listening gallery, acp_jax/gallery.py
  }

Models or entries not run are shown as "—".
"""

from collections.abc import Mapping, Sequence
import dataclasses
import json
import os
import pathlib
import textwrap
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
import threadpoolctl  # noqa: E402

from acp_jax import MissingInputError  # noqa: E402
from acp_jax import UserError  # noqa: E402

FIGURES_DIR = "figures"  # under the report's directory

# The paper's numbers (accuracy, %), as (results key, row name, value).
PAPER_TABLE4 = (
    ("l3net", "L³-Net [13]", 57.17),
    ("spectrogram_acp", "Spectrogram-ACP", 55.84),
    ("acp", "ACP-Net (proposed)", 61.67),
)
# Table 5. The text gives 63.56 for music; the table prints 63.5.
PAPER_TABLE5_IMAGES = (
    ("random", "Random", 12.5),
    ("art", "Art-based emotion features [26]", 46.5),
    ("alexnet", "AlexNet [27]", 58.6),
    ("mlp", "ACP-Net features + MLP", 40.4),
)
PAPER_TABLE5_MUSIC = (
    ("random", "Random", 33.3),
    ("spectrogram_cnn", "Spectrogram + CNN", 47.8),
    ("mlp", "ACP-Net features + MLP", 63.5),
)

# config.model -> the name a report gives the run's own model.
MODEL_NAMES = {"acp": "ACP-Net", "l3net": "L³-Net", "spectrogram_acp": "Spectrogram-ACP"}
# config.objective -> how a row names a model trained with it (ACP-Net's own: no suffix).
OBJECTIVE_NAMES = {"supcon": "SupCon (Emo-CLIM)", "sigmoid": "sigmoid (SigLIP)"}
ENCODER_NAMES = {"clip": "CLIP ViT-B/32", "siglip": "SigLIP B/16", "clap": "CLAP",
                 "inception": "Inception-V3", "descriptor": "descriptor"}
PAPER_ENCODERS = ("inception", "descriptor")

_DASH = "—"
_DPI = 120
# A Table 4 row: these and their `_std` and `_ci95` siblings, and the test-pair count.
_ROW_KEYS = ("test_accuracy", "test_auc")

# Warm for positive emotions, green for neutral, cold and dark for negative ones.
_COLOURS = {
    "positive": "#e9a23b", "neutral": "#6a9f58", "negative": "#4c6a9c",
    "amusement": "#f4a261", "awe": "#e9c46a", "excitement": "#e76f51",
    "contentment": "#8ab17d",
    "anger": "#9b2226", "disgust": "#6a4c93", "fear": "#264653", "sadness": "#457b9d",
}


def _colour(name: str, index: int) -> str:
  """The fixed colour of a known class or emotion, else a tab10 colour by index."""
  return _COLOURS.get(name, matplotlib.colors.to_hex(plt.get_cmap("tab10")(index % 10)))


def _save(fig: plt.Figure, path: str | pathlib.Path) -> None:
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=_DPI, bbox_inches="tight", facecolor="white")
  plt.close(fig)


def plot_learning_curves(history: Sequence[Mapping[str, float]], path: str | pathlib.Path,
                         *, x_key: str = "step", title: str = "Learning curves") -> None:
  """Losses on the left, every other metric (accuracies, AUC) on the right.

  Rows may lack keys (validation runs less often than training): each series is
  drawn over the rows that have it.
  """
  names = sorted({k for row in history for k in row if k != x_key})
  panels = [(p, [n for n in names if ("loss" in n) == (p == "loss")]) for p in ("loss", "metric")]
  panels = [(p, series) for p, series in panels if series]
  if not panels:
    raise ValueError(f"history has no series besides {x_key!r}")
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
  for ax, (panel, series) in zip(axes[0], panels):
    for name in series:
      points = [(row[x_key], row[name]) for row in history if name in row and x_key in row]
      if not points:
        continue
      xs, ys = zip(*points)
      ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=name)
    ax.set_xlabel(x_key)
    ax.set_ylabel("loss" if panel == "loss" else "value")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
  fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | pathlib.Path,
                   title: str) -> None:
  """Counts and row percentages; colour is the fraction of each true class."""
  matrix = np.asarray(matrix)
  rows = matrix.sum(axis=1, keepdims=True)
  recall_CxC = matrix / np.maximum(rows, 1)
  size = 1.6 + 0.75 * len(class_names)
  fig, ax = plt.subplots(figsize=(size + 1.2, size))
  image = ax.imshow(recall_CxC, cmap="Blues", vmin=0.0, vmax=1.0)
  fontsize = 9 if len(class_names) <= 4 else 7
  for (i, j), count in np.ndenumerate(matrix):
    ax.text(j, i, f"{count}\n{100 * recall_CxC[i, j]:.0f}%", ha="center", va="center",
            fontsize=fontsize, color="white" if recall_CxC[i, j] > 0.55 else "black")
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=40, ha="right")
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  ax.set_title(f"{title}\naccuracy {100 * accuracy:.1f}% of {matrix.sum()}")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
  _save(fig, path)


def plot_embedding_map(emb_NxD: np.ndarray, labels_N: np.ndarray, class_names: Sequence[str],
                       path: str | pathlib.Path, title: str, *, max_points: int = 3000,
                       pca_dim: int = 50, perplexity: float = 30.0, seed: int = 0) -> str | None:
  """2-D t-SNE (after PCA to `pca_dim`) of at most `max_points` seeded-sampled points.

  Returns None, or why no map was drawn: embeddings with fewer than 3 distinct rows
  (a collapsed tower) or non-finite values have no map, and scikit-learn's t-SNE
  crashes the process on identical points.
  """
  emb_NxD, labels_N = np.asarray(emb_NxD, np.float32), np.asarray(labels_N)
  total = len(labels_N)
  if not np.isfinite(emb_NxD).all():
    return f"{title}: non-finite embeddings; no map"
  distinct = len(np.unique(emb_NxD, axis=0))
  if distinct < 3:
    return (f"{title}: collapsed, {'all' if distinct == 1 else 'only'} {distinct} distinct "
            f"embedding{'s' * (distinct > 1)} among {total}; no map")
  rng = np.random.default_rng(seed)
  keep = (np.sort(rng.choice(total, max_points, replace=False)) if total > max_points
          else np.arange(total))
  emb_NxD, labels_N = emb_NxD[keep], labels_N[keep]
  # One thread: t-SNE's OpenMP threads spin-wait on busy cores (a test run, a training
  # job beside it) and were 2x (3000 points) to 40x (30 points) slower than one thread.
  with threadpoolctl.threadpool_limits(1):
    reduced = PCA(min(pca_dim, *emb_NxD.shape), random_state=seed).fit_transform(emb_NxD)
    # t-SNE needs perplexity below the number of points.
    map_Nx2 = TSNE(2, perplexity=min(perplexity, (len(keep) - 1) / 3), init="pca",
                   random_state=seed).fit_transform(reduced)
  fig, ax = plt.subplots(figsize=(6.4, 5.6))
  for c, name in enumerate(class_names):
    mask = labels_N == c
    if mask.any():
      ax.scatter(*map_Nx2[mask].T, s=7, alpha=0.75, color=_colour(name, c),
                 label=f"{name} ({mask.sum()})", linewidths=0)
  ax.set_xticks([])
  ax.set_yticks([])
  sampled = f"{len(keep)} of {total} points" if total > len(keep) else f"{total} points"
  ax.set_title(f"{title}\nt-SNE, {sampled}")
  ax.legend(frameon=False, markerscale=2.5, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
  _save(fig, path)
  return None


def _draw_placeholder(ax: plt.Axes, emotion: str) -> None:
  colour = _colour(emotion, 0)
  ax.set_facecolor(colour)
  # Dark text on light fills, light text on dark ones (perceived luminance).
  luminance = np.dot(matplotlib.colors.to_rgb(colour), (0.299, 0.587, 0.114))
  ink = "black" if luminance > 0.6 else "white"
  ax.text(0.5, 0.5, emotion, transform=ax.transAxes, ha="center", va="center", fontsize=10,
          color=ink, fontweight="bold")
  ax.text(0.5, 0.12, "no pixels", transform=ax.transAxes, ha="center", va="center",
          fontsize=6.5, color=ink, alpha=0.7)


def _square_crop(pixels_HxWx3: np.ndarray) -> np.ndarray:
  """The central square, so that thumbnails of any aspect share one cell shape."""
  height, width = pixels_HxWx3.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return pixels_HxWx3[top:top + side, left:left + side]


def plot_gallery(rows: Sequence[Mapping], report_dir: str | pathlib.Path,
                 path: str | pathlib.Path, title: str = "Music → top-ranked images") -> None:
  """Fig.-3-style grid of the gallery's music queries (acp_jax/gallery.py): one segment a
  row, its ranked images (their thumbnails' files relative to `report_dir`) marked ✓ / ✗."""
  if not rows:
    raise ValueError("no gallery rows to draw")
  top_k = max(len(row["matches"]) for row in rows)
  fig = plt.figure(figsize=(2.3 + 1.55 * top_k, 2.0 * len(rows) + 0.5))
  grid = fig.add_gridspec(len(rows), top_k + 1, width_ratios=[1.5] + [1] * top_k,
                          wspace=0.12, hspace=0.55)
  for r, row in enumerate(rows):
    label_ax = fig.add_subplot(grid[r, 0])
    label_ax.axis("off")
    # Ids have no spaces to wrap at; cut them so they stay inside the label column. They
    # are the user's file names: text, never mathtext.
    label_ax.text(0.0, 0.98, textwrap.fill(row["id"], 20), fontsize=9, fontweight="bold",
                  transform=label_ax.transAxes, va="top", parse_math=False)
    label_ax.text(0.0, 0.5, f"true class: {row['class']}", fontsize=9,
                  color=_colour(row["class"], 0), transform=label_ax.transAxes, va="center")
    for j, image in enumerate(row["matches"]):
      ax = fig.add_subplot(grid[r, j + 1])
      ax.set_box_aspect(1)
      ax.set_xticks([])
      ax.set_yticks([])
      emotion = image.get("emotion", image["class"])
      if image["file"] is None:
        _draw_placeholder(ax, emotion)
      else:
        with Image.open(pathlib.Path(report_dir) / image["file"]) as thumbnail:
          ax.imshow(_square_crop(np.asarray(thumbnail.convert("RGB"))), aspect="auto")
      mark, colour = ("✓", "#1a9e3f") if image["match"] else ("✗", "#d62728")
      ax.text(0.88, 0.86, mark, transform=ax.transAxes, ha="center", va="center", fontsize=15,
              fontweight="bold", color=colour,
              bbox=dict(boxstyle="circle,pad=0.15", facecolor="white", edgecolor=colour, lw=1.2))
      for side in ax.spines.values():
        side.set_edgecolor(colour)
        side.set_linewidth(2.0)
      ax.set_xlabel(f"{emotion}\nscore {image['score']:.3f}", fontsize=8.5, labelpad=3)
      if r == 0:
        ax.set_title(f"#{j + 1}", fontsize=9)
  fig.suptitle(title, fontsize=12)
  _save(fig, path)


def _cell(entry: Mapping | None, key: str, *, percent: bool = True) -> str:
  """`entry[key]` (with its `_std` and `[_ci95]` if present) as a table cell, or a dash."""
  if not entry or entry.get(key) is None:
    return _DASH
  scale, digits = (100.0, 2) if percent else (1.0, 3)
  text = f"{scale * entry[key]:.{digits}f}"
  if entry.get(f"{key}_std") is not None:
    text += f" ± {scale * entry[f'{key}_std']:.{digits}f}"
  if entry.get(f"{key}_ci95") is not None:
    low, high = entry[f"{key}_ci95"]
    text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
  return text


@dataclasses.dataclass(frozen=True)
class Table:
  """A table of cells (text), laid out as Markdown in report.md and HTML in report.html."""
  header: Sequence[str]
  rows: Sequence[Sequence[str]]
  title: str = ""                # a sub-table's title
  after: Sequence[str] = ()      # paragraphs under it


@dataclasses.dataclass(frozen=True)
class Section:
  """A titled part of the report: paragraphs, then tables."""
  title: str
  tables: Sequence[Table]
  before: Sequence[str] = ()


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
          *("| " + " | ".join(row) + " |" for row in rows)]


def _markdown(section: Section) -> list[str]:
  paragraphs = lambda texts: [line for text in texts for line in (text, "")]
  lines = [f"## {section.title}", "", *paragraphs(section.before)]
  for table in section.tables:
    if table.title:
      lines += [f"**{table.title}**", ""]
    lines += [*_markdown_table(table.header, table.rows), "", *paragraphs(table.after)]
  return lines


def row_key(results: Mapping) -> str:
  """A run's key among Table 4's rows: its model, then `+objective` unless ACP-Net's own,
  then `@image+music` when its features come from other encoders than the paper's."""
  model, objective = results.get("model", "acp"), results.get("objective", "correspondence")
  key = model if objective == "correspondence" else f"{model}+{objective}"
  encoders = _encoders(results)
  return key if encoders == PAPER_ENCODERS else f"{key}@{'+'.join(encoders)}"


def _encoders(results: Mapping) -> tuple[str, str]:
  encoders = results.get("encoders") or {}
  return encoders.get("image", "inception"), encoders.get("music", "descriptor")


def _row(results: Mapping) -> dict[str, Any]:
  keys = ([k for key in _ROW_KEYS for k in (key, f"{key}_std", f"{key}_ci95")]
          + ["test_pairs", "dataset", "encoders"])
  return {k: results[k] for k in keys if k in results}


def table4_rows(results: Mapping, compare: str) -> dict[str, dict[str, Any]]:
  """Table 4 rows by `row_key`: the runs in `compare` (comma-separated workdirs), each
  with its `retrieval`, then this run's (its retrieval is the report's own).

  A compared run may be of another features config of the same corpus: its pair
  fingerprints say that it scored the same pairs. Raises UserError for a run on other
  fixed pairs (fingerprints; the dataset, where they are unknown).
  """
  rows = {}
  for run in filter(None, (d.strip() for d in compare.split(","))):
    path = pathlib.Path(run) / "results.json"
    if not path.exists():
      raise MissingInputError(f"report.compare names {run}, which has no results.json; train "
                              "that run first or leave it out")
    other = json.loads(path.read_text())
    known = any((results.get("pair_fingerprint") or {}).values())
    for key in ("pair_fingerprint",) if known else ("dataset", "pair_fingerprint"):
      if other.get(key) != results.get(key):
        raise UserError(
            f"report.compare names {run}, a run on other fixed pairs ({key} {other.get(key)} "
            f"there, {results.get(key)} here): its accuracy is not comparable. Compare runs "
            "on the same pairs (one corpus, any features config), or leave it out.")
    rows[row_key(other)] = {**_row(other), "retrieval": other.get("retrieval")}
  rows[row_key(results)] = _row(results)
  return rows


def _row_name(key: str) -> str:
  key, _, encoders = key.partition("@")
  model, _, objective = key.partition("+")
  name = MODEL_NAMES.get(model, model)
  name = f"{name} towers, {OBJECTIVE_NAMES.get(objective, objective)}" if objective else name
  if encoders:
    name += f", {' + '.join(ENCODER_NAMES.get(e, e) for e in encoders.split('+'))} features"
  return name


def _model_name(results: Mapping) -> str:
  return _row_name(row_key(results))


def _table4(results: Mapping) -> Section:
  models = dict(results.get("models", {}))
  models.setdefault(row_key(results), {k: v for k, v in results.items() if k.startswith("test_")})
  with_auc = any(m.get("test_auc") is not None for m in models.values())
  header = (["Model", "Paper accuracy (%)", "Ours accuracy (%)", "Test pairs"]
            + (["Ours AUC"] * with_auc))
  count = lambda entry: str(entry["test_pairs"]) if entry and "test_pairs" in entry else _DASH
  paper_rows = [(key, name, f"{paper:.2f}") for key, name, paper in PAPER_TABLE4]
  paper_rows += [(key, _row_name(key), _DASH) for key in models
                 if key not in {k for k, _, _ in PAPER_TABLE4}]
  rows = [[name, paper, _cell(models.get(key), "test_accuracy"), count(models.get(key))]
          + [_cell(models.get(key), "test_auc", percent=False)] * with_auc
          for key, name, paper in paper_rows]
  if results.get("test_chance") is not None:
    rows.append(["Chance (one answer for every pair)", _DASH, _cell(results, "test_chance"),
                 count(results)] + ["0.500"] * with_auc)
  if results.get("oracle_accuracy") is not None:
    rows.append(["Oracle ceiling (synthetic cues)", _DASH, _cell(results, "oracle_accuracy"),
                 count(results)] + [_DASH] * with_auc)
  notes = ["Accuracy on the fixed, balanced test pairs."]
  if any("+" in key for key in models):
    notes.append("A contrastive model (\"towers, ...\") calls a pair a match when the cosine "
                 "similarity of its projections exceeds the threshold chosen on the validation "
                 "pairs.")
  if results.get("interval"):
    notes.append(f"[low, high]: {results['interval']}.")
  if results.get("val_accuracy") is not None:
    notes.append(f"{_model_name(results)} validation accuracy: {_cell(results, 'val_accuracy')}%"
                 + (f" on {results['validation_pairs']} pairs." if "validation_pairs" in results
                    else "."))
  after = [" ".join(notes)]
  if results.get("analysed_model"):
    after.append(f"Probes, retrieval and figures are of {results['analysed_model']}.")
  return Section("Affective correspondence (paper Table 4)", [Table(header, rows, after=after)])


def _table5_part(title: str, paper_rows: Sequence[tuple[str, str, float]],
                 probe: Mapping | None) -> Table:
  ours = {"random": _cell(probe, "chance"), "mlp": _cell(probe, "test_accuracy")}
  rows = [[name, f"{paper:.1f}", ours.get(key, _DASH)] for key, name, paper in paper_rows]
  rows.insert(1, ["Majority class", _DASH, _cell(probe, "majority")])
  after = []
  if probe and probe.get("confusion") is not None:
    after.append(f"Ours on {int(np.sum(probe['confusion']))} test items.")
  details = [f"{name} {_cell(probe, key)}%" for key, name in (
      ("test_balanced_accuracy", "balanced test accuracy"), ("val_accuracy", "validation accuracy"))
      if probe and probe.get(key) is not None]
  if probe and probe.get("best_epoch") is not None:
    details.append(f"best epoch {probe['best_epoch']} of {probe.get('epochs_run', _DASH)}")
  if details:
    after.append("MLP probe: " + ", ".join(details) + ".")
  return Table(["Method", "Paper accuracy (%)", "Ours accuracy (%)"], rows, title, after)


def _table5(results: Mapping) -> Section:
  probes = results.get("probe", {})
  return Section(
      f"Emotion recognition from {_model_name(results)} embeddings (paper Table 5)",
      [_table5_part("Emotion in images (8 classes)", PAPER_TABLE5_IMAGES, probes.get("image")),
       _table5_part("Emotion in music (3 classes)", PAPER_TABLE5_MUSIC, probes.get("music"))],
      ["Random = chance, 1 / number of classes. Majority class = always answering the most "
       "frequent training class."])


def _retrieval_table(results: Mapping) -> Section:
  """This run's retrieval and that of every compared run with one, each direction with chance."""
  retrieval = results["retrieval"]
  by_model = {key: row["retrieval"] for key, row in results.get("models", {}).items()
              if row.get("retrieval")}
  by_model[row_key(results)] = retrieval
  names = {"music_to_image": "music → image", "image_to_music": "image → music"}
  metrics = sorted({k for d in retrieval.values() for k in d
                    if k.startswith("p@") and not k.endswith("_std")},
                   key=lambda k: int(k[2:])) + ["map", "mrr"]
  header = ["Query → key", ""] + [{"map": "mAP", "mrr": "MRR"}.get(m, m.upper()) for m in metrics]
  rows = []
  for key, direction in retrieval.items():
    for i, (model, entry) in enumerate(by_model.items()):
      rows.append([names.get(key, key) if i == 0 else "", _row_name(model)]
                  + [_cell(entry.get(key), m) for m in metrics])
    rows.append(["", "chance"] + [_cell(direction.get("chance"), m) for m in metrics])
  queries = [f"{names.get(key, key)} {direction['queries']}" for key, direction in retrieval.items()
             if "queries" in direction]
  return Section(
      "Cross-modal retrieval",
      [Table(header, rows, after=[f"Queries: {', '.join(queries)}."] if queries else [])],
      ["Ranked by each model's match score: ACP-Net's match log-odds, an embedding model's "
       "cosine similarity. Relevant = same emotion class; each metric is averaged over the "
       "queries of a class, then over classes (%); ± is the std over seeds. Per-class figures "
       "are in results.json."])


def sections(results: Mapping) -> list[Section]:
  """The report's tables: Table 4, Table 5, and retrieval if it ran."""
  return [_table4(results), _table5(results)] + (
      [_retrieval_table(results)] if results.get("retrieval") else [])


def _to_json(value):
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def random_features_warning(results: Mapping) -> str | None:
  """The warning every result on random-init image features carries, and every result of
  frozen encoders on a generated corpus; None otherwise."""
  runs = [results, *results.get("models", {}).values()]
  if any(_encoders(run) != PAPER_ENCODERS and "synthetic" in str(run.get("dataset"))
         for run in runs):
    return ("Frozen encoders on the generated corpus: they see generated pictures and tones, "
            "with whatever weights the weights directory holds (random in the tests). These "
            "numbers show that the pipeline runs; they mean nothing about the encoders.")
  weights = results.get("inception_weights")
  if not weights or not weights.startswith("random"):
    return None
  return (f"Image features from a random-init Inception-V3 ({weights}), not the ImageNet "
          "weights: not the paper's setting" + (
              "." if "synthetic" in str(results.get("dataset")) else
              "; rebuild the dataset with the Keras ImageNet weights file for paper numbers."))


def _title(results: Mapping) -> str:
  dataset = results.get("dataset")
  return f"{_model_name(results)} report" + (f": {dataset}" if dataset else "")


def _relative(path: str | pathlib.Path, out_dir: pathlib.Path) -> str:
  return pathlib.Path(os.path.relpath(pathlib.Path(path).resolve(), out_dir.resolve())).as_posix()


def write_report(results: Mapping, out_dir: str | pathlib.Path,
                 figures: Mapping[str, str | pathlib.Path]) -> pathlib.Path:
  """Writes `report.md` and `report.html` (tables, then `figures` by caption; the page also
  the listening gallery) and `results.json`.

  Args:
    results: see the module docstring.
    out_dir: created if missing.
    figures: caption -> PNG path, embedded in order, relative to `out_dir`.

  Returns:
    The path of `report.md`.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tables = sections(results)
  lines = [f"# {_title(results)}", "",
           "Paper: Verma, Dhekane, Guha, *Learning affective correspondence between music and "
           "image*, ICASSP 2019. \"—\" marks a model or entry not run.", ""]
  warning = random_features_warning(results)
  if warning:
    lines += [f"> **{warning}**", ""]
  if any((results.get("pair_fingerprint") or {}).values()):  # None: a dataset without them
    lines += ["Fixed pairs: " + ", ".join(f"{split} `{fingerprint}`" for split, fingerprint
                                          in results["pair_fingerprint"].items())
              + " (fingerprints of each split's pair list: equal fingerprints, same pairs).", ""]
  if results.get("degenerate"):
    lines += ["## Degenerate run", "", *(f"- {note}" for note in results["degenerate"]), ""]
  for section in tables:
    lines += _markdown(section)
  if results.get("gallery"):
    lines += ["The listening gallery (the segments' audio beside the images) is in "
              "report.html.", ""]
  if figures:
    lines += ["## Figures", ""]
    for caption, path in figures.items():
      lines += [f"### {caption}", "", f"![{caption}]({_relative(path, out_dir)})", ""]
  write_results(results, out_dir)
  write_html(out_dir, _title(results), results, tables, figures)
  report = out_dir / "report.md"
  report.write_text("\n".join(lines))
  return report


_PAGES = jinja2.Environment(loader=jinja2.PackageLoader("acp_jax"), autoescape=True,
                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True)


def write_html(out_dir: str | pathlib.Path, title: str, results: Mapping,
               tables: Sequence[Section] = (),
               figures: Mapping[str, str | pathlib.Path] | None = None,
               intro: Sequence[str] = ()) -> pathlib.Path:
  """Writes `report.html`, a static page (no server, no network, every file it shows under
  `out_dir`): `intro` paragraphs, the tables, the listening gallery of `results['gallery']`
  (acp_jax/gallery.py) and `figures` (caption -> PNG path). Every text is escaped."""
  out_dir = pathlib.Path(out_dir)
  page = _PAGES.get_template("report.html.j2").render(
      title=title, intro=intro, results=results, warning=random_features_warning(results),
      sections=tables, gallery=results.get("gallery"),
      figures={caption: _relative(path, out_dir) for caption, path in (figures or {}).items()})
  path = out_dir / "report.html"
  path.write_text(page)
  return path


def write_results(results: Mapping, out_dir: str | pathlib.Path) -> None:
  """Writes `results.json`."""
  (pathlib.Path(out_dir) / "results.json").write_text(
      json.dumps(results, indent=2, default=_to_json) + "\n")


def summary(results: Mapping, workdir: str | pathlib.Path) -> str:
  """The lines a run ends with: test accuracy (against the oracle if known), where the time
  went, and where to look."""
  spread = lambda key: (f"{results[key]:.3f} ± {results[key + '_std']:.3f}"
                        if key + "_std" in results else f"{results[key]:.3f}")
  line = (f"{row_key(results)} on {results['dataset']}: "
          f"test accuracy {spread('test_accuracy')}")
  if results.get("test_accuracy_ci95"):
    line += " (95% CI {:.3f}-{:.3f})".format(*results["test_accuracy_ci95"])
  if "test_pairs" in results:
    line += f" on {results['test_pairs']} test pairs"
  if "oracle_accuracy" in results:
    line += (f", oracle {results['oracle_accuracy']:.3f}: "
             f"{results['test_accuracy'] / results['oracle_accuracy']:.2f} x")
  if results.get("test_auc") is not None:
    line += f", AUC {spread('test_auc')}"
  lines = [line]
  warning = random_features_warning(results)
  if warning:
    lines.append(warning)
  if results.get("phases_s"):
    lines.append("time (s): " + ", ".join(f"{phase} {seconds:.1f}"
                                          for phase, seconds in results["phases_s"].items()))
  workdir = pathlib.Path(workdir)
  return "\n".join(lines + [f"results: {workdir / 'results.json'}",
                            f"report:  {workdir / 'report.md'}",
                            f"page:    {workdir / 'report.html'} (plays the gallery)"])
