"""bench/device.py --smoke: every part runs at toy size, and the JSON holds them all."""

import json
import pathlib
import subprocess
import sys

import pytest

from bench import device

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_smoke_run_has_every_part(tmp_path):
  subprocess.run([sys.executable, "-m", "bench.device", "--smoke", f"--out={tmp_path}"],
                 cwd=REPO, check=True, timeout=420)
  report = json.loads((tmp_path / "device.json").read_text())
  assert device.check_schema(report) == []
  for name in device.PARTS:
    part = report["parts"][name]
    assert "skipped" not in part, f"{name}: {part['skipped']}"
    assert part["figures"] and part["wall_s"] > 0
  markdown = (tmp_path / "device.md").read_text()
  assert all(f"| {name} |" in markdown for name in device.PARTS)


@pytest.mark.parametrize("break_it, problem", [
    (lambda r: r["parts"].pop("build"), "parts are"),
    (lambda r: r.pop("versions"), "missing top-level key 'versions'"),
    (lambda r: r["parts"]["train"].update(skipped="out of budget"), "exactly one of"),
    (lambda r: r["parts"]["train"].update(figures={}), "non-empty dict"),
    (lambda r: r["parts"]["features"].pop("figures"), "exactly one of"),
])
def test_schema_check_names_what_is_wrong(break_it, problem):
  part = {"budget_s": 1, "wall_s": 0.5, "settings": {}, "figures": {"x": 1.0}, "notes": {}}
  report = {"device": "cpu", "platform": "cpu", "num_devices": 1, "versions": {},
            "machine": "cpu", "parts": {name: dict(part) for name in device.PARTS}}
  assert device.check_schema(report) == []
  break_it(report)
  assert any(problem in p for p in device.check_schema(report))
