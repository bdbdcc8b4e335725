"""The benchmark scripts run from a fresh clone and keep their output contracts (tiny sizes)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _run(script, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_train_step_json_contract(tmp_path):
  out = tmp_path / "steps.jsonl"
  specs = "erm,dro:finite_difference:subsample=0.5"
  proc = _run("train_step.py", "--methods", specs, "--model", "tiny", "--width", "4", "--batch",
              "8", "--iters", "1", "--rounds", "2", "--warmup", "0", "--json", str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = {r["method_spec"]: r for r in _rows(out)}
  assert set(rows) == set(specs.split(","))
  for row in rows.values():
    for key in ("method", "penalty_mode", "width", "batch", "img_per_s", "step_ratio_to_erm",
                "compile_s", "peak_rss_mb"):
      assert key in row, key
    assert row["width"] == 4 and row["batch"] == 8 and row["img_per_s"] > 0
    assert row["recompiles"] == 0
  assert rows["erm"]["step_ratio_to_erm"] == 1.0 and rows["erm"]["penalty_mode"] is None
  sub = rows["dro:finite_difference:subsample=0.5"]
  assert (sub["penalty_mode"], sub["penalty_subsample"]) == ("finite_difference", 0.5)
  assert "| method_spec |" in proc.stdout


def test_train_step_rejects_an_unknown_penalty_option():
  proc = _run("train_step.py", "--methods", "dro:finite_diff", "--model", "tiny")
  assert proc.returncode != 0
  assert "unknown option 'finite_diff'" in proc.stderr
  assert "forward_over_reverse" in proc.stderr


def test_penalty_accuracy_exact_modes_agree(tmp_path):
  out = tmp_path / "acc.jsonl"
  proc = _run("penalty_accuracy.py", "--model", "tiny", "--width", "4", "--batch", "8",
              "--fd_steps", "5e-3,2e-2", "--json", str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = _rows(out)
  assert [(r["mode"], r["fd_step"]) for r in rows] == [
      ("forward_over_reverse", None), ("finite_difference", 5e-3), ("finite_difference", 2e-2)]
  exact_twin = rows[0]
  assert exact_twin["cos_penalty_grad"] > 0.99999 and exact_twin["rel_err_penalty_grad"] < 1e-3
  for r in rows:
    assert -1.0 <= r["cos_total_grad"] <= 1.0 + 1e-9 and r["images"] == "random"
  assert "| forward_over_reverse |" in proc.stdout


def test_conv_ops_rows_and_bad_width(tmp_path):
  out = tmp_path / "conv.jsonl"
  proc = _run("conv_ops.py", "--width", "1", "--batch", "2", "--iters", "1", "--rounds", "1",
              "--no_torch", "--json", str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = _rows(out)
  assert [(r["shape"], r["op"]) for r in rows] == [
      (shape, op) for shape in ("32x32x1", "16x16x2", "8x8x4", "4x4x8")
      for op in ("forward", "input_grad", "weight_grad")]
  assert all(r["jax_ms"] > 0 and r["torch_ms"] is None for r in rows)
  bad = _run("conv_ops.py", "--width", "0")
  assert bad.returncode == 2 and "--width must be a comma list of positive ints" in bad.stderr


def test_suite_gather_rows_and_bad_flag(tmp_path):
  from tests._shared_data import write_tiny_fashion_mnist

  write_tiny_fashion_mnist(tmp_path, test=24)
  out = tmp_path / "gather.jsonl"
  proc = _run("suite_gather.py", "--data_dir", str(tmp_path), "--width", "4", "--train", "64",
              "--train_batch", "16", "--images", "24", "--batch", "8", "--apgd_steps", "3",
              "--targets", "2", "--square_queries", "5", "--eps", "8", "--json", str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = _rows(out)
  assert [r["form"] for r in rows] == ["masked", "gathered"]
  for r in rows:
    assert r["images"] == 24 and r["wall_s"] > 0
    assert 0 <= r["robust_square"] <= r["robust_apgd_t"] <= r["robust_apgd_ce"] <= 100
  assert rows[1]["speedup_vs_masked"] > 0
  proc = _run("suite_gather.py", "--data_dir", str(tmp_path), "--images", "0")
  assert proc.returncode == 2 and "--images must be >= 1" in proc.stderr
