"""The evaluator's APGD / suite path: closed-form accuracies through batching and padding, and
the per-attack columns in results.md / results.csv / the comparison table."""

import csv
import json
import os

import numpy as np
import pytest

from drojax import evaluate as ev
from experiments import reporting
from tests.test_attacks_auto import _EPS_INF, _closed_form_linf, _linear, _points


@pytest.fixture(scope="module")
def suite_results():
  x, y = _points(40, 0.0, 1.0, lambda x, y: _closed_form_linf(x, y, _EPS_INF)[0], 0.02)
  worst, _ = _closed_form_linf(x, y, _EPS_INF)
  robust = np.where(y == 0, worst > 0, worst <= 0)
  # 40 images in batches of 16: the last batch has 8 padding rows.
  r = ev.evaluate(_linear, x, y, corruptions=None, adv_eps=[0.0, _EPS_INF], adv_attack="suite",
                  adv_apgd_steps=20, adv_square_queries=300, batch_size=16, progress=False)
  return r, robust


def test_suite_through_the_evaluator_matches_the_closed_form(suite_results):
  r, robust = suite_results
  key = ev.eps_key(_EPS_INF)
  assert r["adversarial"]["attack"] == "suite"
  assert list(r["adversarial_by_attack"]) == ["apgd_ce", "apgd_t", "square"]
  for a, accs in r["adversarial_by_attack"].items():
    assert accs["0"] == 1.0, a
    assert accs[key] == pytest.approx(robust.mean()), a
  assert r["adversarial_accuracy"] == r["adversarial_by_attack"]["square"]


def test_per_attack_columns_in_results_and_comparison(suite_results, tmp_path):
  r, _ = suite_results
  res = dict(r, method="erm", dataset="linear", train_seconds=1.0)
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  reporting.write_results(a, res)
  old = dict(res)  # a run written before per-attack columns: PGD only
  old.pop("adversarial_by_attack")
  old["adversarial"] = {"attack": "pgd", "norm": "linf"}
  reporting.write_results(b, old)
  md = open(os.path.join(a, "results.md")).read()
  assert "| eps | APGD-CE | APGD-T | Square |" in md
  with open(os.path.join(a, "results.csv")) as f:
    metrics = {row["metric"] for row in csv.DictReader(f)}
  assert {"adversarial_accuracy_apgd_ce", "adversarial_accuracy_square"} <= metrics
  assert "adversarial_by_attack" in json.load(open(os.path.join(a, "results.json")))
  paths = reporting.compare_runs([a, b], str(tmp_path / "cmp"))
  table = open(paths["md"]).read()
  for col in ("APGD-CE 0.06", "APGD-T 0.06", "Square 0.06", "PGD 0.06"):
    assert any(col in line for line in table.splitlines()[:3]), (col, table)
