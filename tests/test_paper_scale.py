"""bench/paper_scale.py at a toy size: the paper's config end to end, its phases and figures."""

from bench import paper_scale


def test_paper_scale_reports_every_phase(tmp_path):
  report = paper_scale.run(str(tmp_path), epochs=1, scale=0.01, signal=0.3, label_noise=0.3)
  assert report["images"] == {"train": 595, "validation": 85, "test": 170}
  # One fixed pair per item by the builder's rule; a pair two items both chose counts once.
  assert 170 < report["test_pairs"] <= 170 + 30
  assert list(report["phases_s"]) == ["data", "compile", "train", "pairs", "retrieval",
                                      "figures", "report"]
  assert report["end_of_run_s"] == sum(list(report["phases_s"].values())[3:])
  # 595 images are 3 steps of 256; a run takes whole dispatches of configs/acp.py's 16.
  assert report["steps"] == 16 and report["pairs_per_second"] > 0
  assert 0 < report["peak_rss_gb"] < 8 and report["peak_device_gb"] is None  # CPU: not reported
  assert 0 <= report["test_accuracy"] <= 1 and 0.6 < report["oracle_accuracy"] < 0.9
  assert (tmp_path / "report.md").exists()
  assert "phase" in paper_scale.table(report)
