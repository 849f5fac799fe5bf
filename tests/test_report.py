"""Report: figures render to non-trivial PNGs and the Markdown carries the paper's tables."""

import json

import numpy as np
from PIL import Image
import pytest

from acp_jax import labels, report, retrieval


def fake_results() -> dict:
  """Results with every table's entries (test_report_html.py lays out the same)."""
  rng = np.random.default_rng(0)
  confusion = np.diag([30, 25, 28]) + rng.integers(0, 8, size=(3, 3))
  music_labels, image_labels = rng.integers(0, 3, 12), rng.integers(0, 3, 40)
  score_MxI = rng.uniform(size=(12, 40)) + 0.3 * (music_labels[:, None] == image_labels)
  return {
      "dataset": "imac/synthetic", "pair_fingerprint": {"validation": "a1b2c3d4e5f6",
                                                        "test": "0123456789ab"},
      "test_accuracy": 0.6412, "test_accuracy_std": 0.0071,
      "test_accuracy_ci95": [0.5774, 0.7050], "test_pairs": 200, "validation_pairs": 100,
      "interval": "95% t interval of the mean over 3 seeds; ± is the sample std (ddof=1)",
      "test_auc": 0.7034,
      "val_accuracy": 0.6521, "test_chance": 0.5, "oracle_accuracy": 0.9012,
      "models": {"spectrogram_acp": {"test_accuracy": 0.5733, "test_auc": 0.6012}},
      "probe": {
          "image": {"test_accuracy": 0.4213, "test_balanced_accuracy": 0.4011, "val_accuracy": 0.43,
                    "chance": 1 / 8, "majority": 0.18, "num_classes": 8, "best_epoch": 12,
                    "epochs_run": 17},
          "music": {"test_accuracy": 0.6655, "chance": 1 / 3, "majority": 0.41, "num_classes": 3,
                    "confusion": confusion},
      },
      "retrieval": retrieval.evaluate_retrieval(score_MxI, music_labels, image_labels, 3),
  }


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, str]:
  """Every plot once, on small fake inputs."""
  out = tmp_path_factory.mktemp("report")
  rng = np.random.default_rng(0)
  history = [{"step": s, "train_loss": 0.7 - 0.1 * np.log1p(s / 100),
              "train_accuracy": 0.5 + s / 4000} for s in range(0, 1000, 50)]
  history += [{"step": s, "val_accuracy": 0.52 + s / 5000, "val_loss": 0.69 - s / 9000}
              for s in range(0, 1000, 200)]
  report.plot_learning_curves(history, out / "curves.png")

  confusion = np.diag(rng.integers(20, 60, 8)) + rng.integers(0, 12, size=(8, 8))
  report.plot_confusion(confusion, labels.EMOTIONS, out / "confusion.png",
                        "Image emotion probe (test)")

  labels_N = rng.integers(0, 3, 240)
  emb_Nx1024 = rng.normal(size=(240, 1024)) + 2.0 * rng.normal(size=(3, 1024))[labels_N]
  # One thread: OpenMP t-SNE crawls when the test machine's cores are busy.
  report.plot_embedding_map(emb_Nx1024, labels_N, labels.CLASSES, out / "map.png",
                            "Music tower embeddings", max_points=200, seed=0)

  emotions_of = [[e for e in labels.EMOTIONS if labels.EMOTION_TO_CLASS[e] == c]
                 for c in range(len(labels.CLASSES))]
  Image.fromarray((rng.uniform(size=(32, 32, 3)) * 255).astype(np.uint8)).save(out / "noise.jpg")
  rows = []
  for m, music_class in enumerate([0, 1, 2, 0, 1]):
    image_classes = rng.integers(0, 3, 5)
    rows.append({"id": f"song{m:03d}#000", "class": labels.CLASSES[music_class], "matches": [
        {"id": f"image{j}", "class": labels.CLASSES[c], "emotion": rng.choice(emotions_of[c]),
         "score": 1.0 - 0.1 * j, "match": bool(c == music_class),
         "file": "noise.jpg" if j % 3 == 0 else None} for j, c in enumerate(image_classes)]})
  report.plot_gallery(rows, out, out / "gallery.png")
  return {"Learning curves": str(out / "curves.png"), "Confusion": str(out / "confusion.png"),
          "Embedding map": str(out / "map.png"), "Gallery": str(out / "gallery.png")}


def test_figures_are_non_trivial_pngs(figures):
  for path in figures.values():
    pixels = np.asarray(Image.open(path).convert("L"), np.float32)
    assert min(pixels.shape) > 300, path
    # Mostly white background, but with real content drawn on it.
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01, path


def test_report_has_paper_tables(figures, tmp_path):
  results = fake_results()
  path = report.write_report(results, tmp_path / "run", figures)
  text = path.read_text()
  # Table 4: paper numbers, ours with std, interval and test-set size, a dash for a
  # model not run, chance, the oracle.
  assert "| ACP-Net (proposed) | 61.67 | 64.12 ± 0.71 [57.74, 70.50] | 200 | 0.703 |" in text
  assert "| Spectrogram-ACP | 55.84 | 57.33 | — | 0.601 |" in text
  assert "| L³-Net [13] | 57.17 | — | — | — |" in text
  assert "| Chance (one answer for every pair) | — | 50.00 | 200 | 0.500 |" in text
  assert "| Oracle ceiling (synthetic cues) | — | 90.12 | 200 | — |" in text
  assert ("[low, high]: 95% t interval of the mean over 3 seeds; ± is the sample std (ddof=1). "
          "ACP-Net validation accuracy: 65.21% on 100 pairs.") in text
  assert "Fixed pairs: validation `a1b2c3d4e5f6`, test `0123456789ab`" in text
  assert "Degenerate" not in text
  # Table 5: every paper row, ours beside the MLP and chance.
  for row in ("| Random | 12.5 | 12.50 |", "| Art-based emotion features [26] | 46.5 | — |",
              "| AlexNet [27] | 58.6 | — |", "| ACP-Net features + MLP | 40.4 | 42.13 |",
              "| Random | 33.3 | 33.33 |", "| Spectrogram + CNN | 47.8 | — |",
              "| ACP-Net features + MLP | 63.5 | 66.55 |"):
    assert row in text, row
  assert ("MLP probe: balanced test accuracy 40.11%, validation accuracy 43.00%, "
          "best epoch 12 of 17.") in text
  assert f"Ours on {results['probe']['music']['confusion'].sum()} test items." in text
  # Retrieval: both directions, ours and chance.
  assert "| Query → key |  | P@1 | P@5 | P@10 | mAP | MRR |" in text
  assert "| music → image | ACP-Net |" in text and "| image → music | ACP-Net |" in text
  assert text.count("|  | chance |") == 2
  for caption, png in figures.items():
    assert f"### {caption}" in text and png.rsplit("/", 1)[-1] in text
  assert json.loads((tmp_path / "run" / "results.json").read_text())["probe"]["music"][
      "confusion"] == results["probe"]["music"]["confusion"].tolist()


def test_report_without_optional_entries(tmp_path):
  text = report.write_report({"test_accuracy": 0.6}, tmp_path, {}).read_text()
  assert "| ACP-Net (proposed) | 61.67 | 60.00 | — |" in text
  assert "| ACP-Net features + MLP | 40.4 | — |" in text
  assert "Cross-modal retrieval" not in text and "Oracle" not in text


def test_report_names_the_run_s_model(tmp_path):
  results = {"model": "l3net", "test_accuracy": 0.6, "val_accuracy": 0.62,
             "retrieval": {"music_to_image": {"p@1": 0.5, "map": 0.4, "mrr": 0.6}}}
  text = report.write_report(results, tmp_path, {}).read_text()
  assert text.startswith("# L³-Net report")
  assert "L³-Net validation accuracy: 62.00%" in text and "ACP-Net validation" not in text
  assert "| music → image | L³-Net |" in text


def test_report_sets_objectives_side_by_side(tmp_path):
  results = fake_results()
  results |= {"objective": "supcon", "models": {
      "acp": {"test_accuracy": 0.81, "test_accuracy_std": 0.02,
              "retrieval": {"music_to_image": {"p@1": 0.7, "map": 0.6, "mrr": 0.8}}},
      "acp+sigmoid": {"test_accuracy": 0.79}}}
  results["retrieval"]["music_to_image"]["p@1_std"] = 0.05
  text = report.write_report(results, tmp_path, {}).read_text()
  assert text.startswith("# ACP-Net towers, SupCon (Emo-CLIM) report")
  assert "| ACP-Net (proposed) | 61.67 | 81.00 ± 2.00 |" in text
  assert "| ACP-Net towers, sigmoid (SigLIP) | — | 79.00 |" in text
  assert "| ACP-Net towers, SupCon (Emo-CLIM) | — | 64.12 ± 0.71 [57.74, 70.50] | 200 |" in text
  assert "threshold chosen on the validation pairs" in text
  # Retrieval: the compared run's row beside this run's, its std, then chance.
  p_at_1 = 100 * results["retrieval"]["music_to_image"]["p@1"]
  assert "| music → image | ACP-Net | 70.00 |" in text
  assert f"|  | ACP-Net towers, SupCon (Emo-CLIM) | {p_at_1:.2f} ± 5.00 |" in text
  assert "Queries: music → image 12, image → music 40." in text


def test_collapsed_embeddings_get_a_note_instead_of_a_map(tmp_path):
  # scikit-learn's t-SNE dies with a segmentation fault on identical points.
  labels_N = np.arange(30) % 3
  for emb_NxD, note in ((np.ones((30, 16)), "collapsed, all 1 distinct embedding among 30"),
                        (np.repeat(np.eye(2, 16), 15, 0), "collapsed, only 2 distinct embeddings"),
                        (np.full((30, 16), np.nan), "non-finite embeddings")):
    skipped = report.plot_embedding_map(emb_NxD, labels_N, labels.CLASSES, tmp_path / "map.png",
                                        "Music tower embeddings", seed=0)
    assert note in skipped and not (tmp_path / "map.png").exists()
  text = report.write_report({"test_accuracy": 0.5, "degenerate": [skipped]}, tmp_path,
                             {}).read_text()
  assert f"## Degenerate run\n\n- {skipped}" in text


def test_random_init_features_are_flagged_in_every_report(tmp_path):
  results = {"dataset": "imac/features", "test_accuracy": 0.6}
  text = report.write_report({**results, "inception_weights": "random(seed=3)"}, tmp_path,
                             {}).read_text()
  assert "> **Image features from a random-init Inception-V3 (random(seed=3))" in text
  assert "rebuild the dataset with the Keras ImageNet weights" in text
  text = report.write_report({**results, "inception_weights": "imagenet"}, tmp_path,
                             {}).read_text()
  assert "random-init" not in text
