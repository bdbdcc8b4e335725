"""Tests for experiments.reporting: the files written, their schema and their contents."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from experiments import reporting as results
from drojax.corruptions import EXTRA_NAMES, STANDARD_NAMES


def _fake_results(seed, method="erm"):
  rng = np.random.default_rng(seed)
  acc = {n: {str(s): float(rng.uniform(0.2, 0.9)) for s in range(1, 6)}
         for n in STANDARD_NAMES + EXTRA_NAMES}
  std = np.mean([v for n in STANDARD_NAMES for v in acc[n].values()])
  ext = np.mean([v for n in EXTRA_NAMES for v in acc[n].values()])
  return {
      "method": method, "dataset": "digits", "clean_accuracy": 0.93,
      "corruption_source": "generated:standard", "corruption_accuracy": acc,
      "mean_corruption_accuracy": float(std), "extra_corruption_accuracy": float(ext),
      "adversarial_accuracy": {"0.0156863": 0.5, "0.0313725": 0.25},
      "adversarial": {"attack": "pgd", "norm": "linf", "num_steps": 20},
      "group_accuracy": {"per_group": {"0": 0.9, "1": 0.4}, "counts": {"0": 10, "1": 5},
                         "worst_group": 0.4, "worst_group_id": 1, "average": 0.8,
                         "weights": {"0": 0.8, "1": 0.2}, "weights_from": "train"},
      "train_seconds": 12.5, "extra_field": np.float32(1.5),
  }


def _png_ok(path):
  with Image.open(path) as im:
    im.load()
    arr = np.asarray(im)
  assert arr.shape[0] > 100 and arr.shape[1] > 100
  assert arr.std() > 0  # something was drawn


def test_write_results_files_and_schema(tmp_path):
  r = _fake_results(0)
  paths = results.write_results(str(tmp_path), r)
  assert set(paths) == {"json", "csv", "md", "severity_png", "adversarial_png"}
  with open(paths["json"]) as f:
    back = json.load(f)
  for k in results.REQUIRED_KEYS:
    assert k in back
  assert back["corruption_accuracy"] == r["corruption_accuracy"]
  assert back["adversarial_accuracy"] == r["adversarial_accuracy"]
  assert back["extra_field"] == 1.5

  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  corr = {(x["name"], x["level"]): float(x["value"]) for x in rows
          if x["metric"] == "corruption_accuracy"}
  assert len(corr) == 19 * 5
  assert corr[("fog", "3")] == pytest.approx(r["corruption_accuracy"]["fog"]["3"])
  adv = {x["level"]: float(x["value"]) for x in rows if x["metric"] == "adversarial_accuracy"}
  assert adv == r["adversarial_accuracy"]

  md = open(paths["md"]).read()
  assert "# erm / digits" in md
  assert "| clean accuracy (%) | 93.00 |" in md
  fog = r["corruption_accuracy"]["fog"]
  fog_row = "| fog | " + " | ".join(f"{100 * fog[str(s)]:.2f}" for s in range(1, 6))
  assert fog_row in md
  assert f"**{100 * r['mean_corruption_accuracy']:.2f}**" in md
  assert "| 8/255 (0.03137) | 25.00 |" in md
  assert "| **worst group** (1) | 40.00 |" in md
  assert "spatter (extra)" in md
  assert "| mean corruption accuracy, 15 standard corruptions x severities 1,2,3,4,5 (%)" in md
  _png_ok(paths["severity_png"])
  _png_ok(paths["adversarial_png"])


def test_missing_sections_and_nan(tmp_path):
  paths = results.write_results(str(tmp_path), {"method": "erm", "clean_accuracy": math.nan})
  assert set(paths) == {"json", "csv", "md"}
  text = open(paths["json"]).read()
  back = json.loads(text)
  assert back["clean_accuracy"] is None  # strict JSON: no NaN
  assert back["corruption_accuracy"] == {} and back["adversarial_accuracy"] == {}
  assert back["train_seconds"] is None
  assert "| clean accuracy (%) | - |" in open(paths["md"]).read()


def test_partial_corruptions_note(tmp_path):
  r = {"method": "erm", "clean_accuracy": 0.5,
       "corruption_accuracy": {"fog": {"1": 0.4, "2": 0.3}}, "mean_corruption_accuracy": 0.35}
  paths = results.write_results(str(tmp_path), r)
  md = open(paths["md"]).read()
  assert "Not every standard corruption" in md
  assert "| fog | 40.00 | 30.00 | 35.00 |" in md


def test_compare_runs(tmp_path):
  dirs = []
  for i, m in enumerate(["erm", "dro", "erm"]):
    d = tmp_path / f"run{i}"
    results.write_results(str(d), _fake_results(i, m))
    dirs.append(str(d))
  out = tmp_path / "cmp"
  paths = results.compare_runs(dirs, str(out))
  assert set(paths) == {"md", "csv", "png", "severity_png"}
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["erm (run0)", "dro", "erm (run2)"]
  for row, i in zip(rows, range(3)):
    assert float(row["mean corruption"]) == pytest.approx(
        _fake_results(i)["mean_corruption_accuracy"])
    assert float(row["PGD 8/255 (0.03137)"]) == 0.25
  md = open(paths["md"]).read()
  assert md.count("\n| ") == 4  # header + 3 runs
  _png_ok(paths["png"])
  _png_ok(paths["severity_png"])


def test_compare_runs_missing_results(tmp_path):
  with pytest.raises(FileNotFoundError, match="results.json"):
    results.compare_runs([str(tmp_path)], str(tmp_path / "out"))
  with pytest.raises(ValueError, match="at least one"):
    results.compare_runs([], str(tmp_path / "out"))


def test_the_adversarial_plot_starts_at_clean_and_spans_0_to_100(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt

  figures = []
  monkeypatch.setattr(plt, "close", figures.append)
  results.plot_adversarial({"erm": _fake_results(0)}, str(tmp_path / "adv.png"))
  (ax,) = figures[0].axes
  (line,) = ax.get_lines()
  np.testing.assert_allclose(line.get_xdata(), [0.0, 255 * 0.0156863, 255 * 0.0313725])
  np.testing.assert_allclose(line.get_ydata(), [93.0, 50.0, 25.0])
  assert ax.get_ylim() == (0, 100)
  assert ax.get_title() == "accuracy under PGD-20 attack (eps 0 = clean)"
  monkeypatch.undo()
  plt.close(figures[0])


@pytest.mark.parametrize("name", ["formatting", "reporting"])
def test_doctests(name):
  import doctest
  import importlib

  result = doctest.testmod(importlib.import_module(f"experiments.{name}"))
  assert result.attempted >= 4 and result.failed == 0
