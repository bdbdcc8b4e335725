"""The evaluator's APGD / suite path: closed-form accuracies through batching and padding, and
the per-attack columns in results.md / results.csv / the comparison table."""

import csv
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drojax import evaluate as ev
from drojax.evaluate import adversarial
from experiments import reporting
from tests.test_attacks_auto import _EPS_INF, _closed_form_linf, _linear, _points


@pytest.fixture(scope="module")
def suite_results():
  x, y = _points(40, 0.0, 1.0, lambda x, y: _closed_form_linf(x, y, _EPS_INF)[0], 0.02)
  worst, _ = _closed_form_linf(x, y, _EPS_INF)
  robust = np.where(y == 0, worst > 0, worst <= 0)
  # 40 images in batches of 16: the last batch has 8 padding rows.
  config = ev.EvalConfig(corruptions=None, eps=[0.0, _EPS_INF], attack="suite", num_steps=20,
                         num_queries=300, batch_size=16)
  r = ev.evaluate(_linear, x, y, config=config, progress=False)
  return r, robust


def test_suite_through_the_evaluator_matches_the_closed_form(suite_results):
  r, robust = suite_results
  key = ev.eps_key(_EPS_INF)
  assert r["adversarial"]["attack"] == "suite"
  assert list(r["adversarial_by_attack"]) == ["apgd_ce", "apgd_t", "fab_t", "square"]
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
  assert "| eps | APGD-CE | APGD-T | FAB-T | Square |" in md
  with open(os.path.join(a, "results.csv")) as f:
    metrics = {row["metric"] for row in csv.DictReader(f)}
  assert {"adversarial_accuracy_apgd_ce", "adversarial_accuracy_fab_t",
          "adversarial_accuracy_square"} <= metrics
  assert "adversarial_by_attack" in json.load(open(os.path.join(a, "results.json")))
  paths = reporting.compare_runs([a, b], str(tmp_path / "cmp"))
  table = open(paths["md"]).read()
  for col in ("APGD-CE 0.06", "APGD-T 0.06", "FAB-T 0.06", "Square 0.06", "PGD 0.06"):
    assert any(col in line for line in table.splitlines()[:3]), (col, table)
  # An L2 run's columns carry the norm and never share an L-inf column.
  l2 = dict(res, adversarial=dict(res["adversarial"], norm="l2"))
  c = str(tmp_path / "c")
  reporting.write_results(c, l2)
  assert "adversarial accuracy (suite, L2), eps 0.06" in open(os.path.join(c, "results.md")).read()
  header = open(reporting.compare_runs([a, c], str(tmp_path / "cmp2"))["md"]).read().splitlines()
  header = next(line for line in header if "FAB-T" in line)
  cells = [h.strip() for h in header.split("|")]
  assert "FAB-T 0.06" in cells and "FAB-T L2 0.06" in cells, header


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), batch_size=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_survivor_batches_cover_each_row_once_in_few_shapes(n, batch_size, seed):
  rows = np.sort(np.random.default_rng(seed).choice(1000, size=n, replace=False))
  batches = adversarial.survivor_batches(rows, batch_size)
  allowed = {-(-batch_size // d) for d in (8, 4, 2, 1)}
  assert len(batches) == -(-n // batch_size)
  np.testing.assert_array_equal(np.concatenate([c for c, _ in batches] + [rows[:0]]), rows)
  for i, (chunk, size) in enumerate(batches):
    assert size in allowed and len(chunk) <= size
    # The smallest allowed shape that holds the chunk (every batch but the last is full).
    assert size == min(z for z in allowed if z >= len(chunk))
    if i < len(batches) - 1:
      assert len(chunk) == batch_size


def test_each_attack_of_the_suite_sees_only_the_survivors(monkeypatch):
  """Counted calls: APGD-T gets exactly the images APGD-CE left, Square those APGD-T left,
  in batches padded only to the next allowed shape; the accuracies stay the closed form's."""
  x, y = _points(40, 0.0, 1.0, lambda x, y: _closed_form_linf(x, y, _EPS_INF)[0], 0.02)
  worst, _ = _closed_form_linf(x, y, _EPS_INF)
  robust = int(np.sum(np.where(y == 0, worst > 0, worst <= 0)))
  assert 0 < robust < 40
  calls = []
  real = adversarial._jit_attack_stage

  def counting(apply_fn, stage, *args):
    fn = real(apply_fn, stage, *args)

    def wrapped(variables, key, xb, yb, eps, n_valid):
      calls.append((float(eps), stage, int(n_valid), xb.shape[0]))
      return fn(variables, key, xb, yb, eps, n_valid)
    return wrapped

  monkeypatch.setattr(adversarial, "_jit_attack_stage", counting)
  out = ev.auto_attack_accuracy(_linear, x, y, eps=[0.0, _EPS_INF], num_steps=20,
                                num_targets=3, num_queries=100, batch_size=16, progress=False)
  for a in ("apgd_ce", "apgd_t", "fab_t", "square"):
    assert out[a]["0"] == 1.0
    assert out[a][ev.eps_key(_EPS_INF)] == robust / 40
  at = [c[1:] for c in calls if c[0] == np.float32(_EPS_INF)]
  rows = {s: sum(n for t, n, _ in at if t == s) for s in ("apgd_ce", "apgd_t", "fab_t", "square")}
  assert rows == {"apgd_ce": 40, "apgd_t": robust, "fab_t": robust, "square": robust}
  assert [(n, b) for t, n, b in at if t == "apgd_ce"] == [(16, 16), (16, 16), (8, 8)]
  for _, n, b in at:
    assert b == min(z for z in (2, 4, 8, 16) if z >= n)
  # At eps 0 nothing is broken: every attack sees all 40 images.
  at0 = [c[1:] for c in calls if c[0] == 0.0]
  assert {s: sum(n for t, n, _ in at0 if t == s) for s in ("apgd_t", "fab_t", "square")} == {
      "apgd_t": 40, "fab_t": 40, "square": 40}
