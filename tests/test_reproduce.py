"""experiments.reproduce on the study framework (experiments.studies, experiments.study_report):
the plan, claims, the scheduler, corrupted sets, statistics, the report, end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from experiments import formatting, reproduce, studies, study_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = reproduce.SCALES["smoke"]


# ------------------------------------------------------------------------------- statistics

def test_t975_matches_scipy():
  for df in list(range(1, 31)) + [31, 100]:
    want = stats.t.ppf(0.975, df)
    got = formatting.t975(df)
    assert abs(got - want) < (5e-4 if df <= 30 else 0.1), (df, got, want)
  with pytest.raises(ValueError, match="df"):
    formatting.t975(0)


def test_mean_ci_matches_scipy_interval():
  rng = np.random.default_rng(0)
  for n in (2, 3, 5, 12):
    x = rng.normal(0.7, 0.05, n)
    mean, half, count = formatting.mean_ci(list(x))
    lo, hi = stats.t.interval(0.95, n - 1, loc=np.mean(x), scale=stats.sem(x))
    assert count == n
    np.testing.assert_allclose(mean, np.mean(x), rtol=1e-12)
    np.testing.assert_allclose(half, (hi - lo) / 2, rtol=1e-3)
  assert formatting.mean_ci([0.5]) == (0.5, None, 1)
  m, h, n = formatting.mean_ci([None, float("nan")])
  assert math.isnan(m) and h is None and n == 0
  assert formatting.ci_cell((0.81234, 0.0045, 3)) == "81.23 ± 0.45"
  assert formatting.ci_cell((-0.01, None, 1), signed=True) == "-1.00 (1 seed)"


def _row(study, name, seed, clean, pgd8=None, mca=None):
  return {"study": study, "name": name, "method": name, "seed": seed, "rho": 0.0,
          "clean": clean, "pgd4": None, "pgd8": pgd8, "pgd16": None, "mca_standard": mca,
          "mca_refined": None, "train_seconds": 60.0}


def test_paired_differences_pair_by_seed_and_skip_unpaired_seeds():
  rows = [_row("s", "a", 0, 0.80), _row("s", "a", 1, 0.90), _row("s", "a", 2, 0.70),
          _row("s", "b", 0, 0.75), _row("s", "b", 1, 0.80)]
  cells = study_report.paired(rows, "a", "b", ["clean"])
  mean, half, n = cells["clean"]
  assert n == 2
  np.testing.assert_allclose(mean, np.mean([0.05, 0.10]))
  np.testing.assert_allclose(half, stats.t.ppf(0.975, 1) * np.std([0.05, 0.10], ddof=1)
                             / np.sqrt(2), rtol=1e-3)
  lines = study_report.table(rows, ["a", "b"], [("clean", "clean")], pairs=[("a", "b")],
                             failed={"b": 1})
  assert lines[3].startswith("| b | 2 (1 diverged) | 77.50 ± ")
  assert lines[4].startswith(f"| **a − b** (paired) | 2 | +{100 * mean:.2f} ± ")


# ------------------------------------------------------------------------------- the plan

def test_plan_is_seed_major_with_unique_workdirs_and_the_issue_s_methods():
  runs = reproduce.plan(list(reproduce.STUDIES), [0, 1, 2], reproduce.SCALES["reduced"])
  assert [r.seed for r in runs] == sorted(r.seed for r in runs)
  dirs = [r.workdir("/r") for r in runs]
  assert len(set(dirs)) == len(dirs)
  seed0 = {(r.study, r.name) for r in runs if r.seed == 0}
  assert {n for s, n in seed0 if s == "fmnist_pgd"} == {"erm", "dro", "mixup", "dro_mixup"}
  assert {n for s, n in seed0 if s == "cifar_augment"} == {"mixup", "dro_mixup", "augmix",
                                                           "dro_augmix"}
  assert {n for s, n in seed0 if s == "cifar_var_dro"} == {"erm", "kl_dro", "var_dro",
                                                           "kl_dro_T10"}
  # The recorded study's temperatures, whatever MethodConfig's default now is.
  temps = {r.name: r.config.method_config.kl_temperature for r in runs
           if r.study == "cifar_var_dro" and r.method == "kl_dro"}
  assert temps == {"kl_dro": 1.0, "kl_dro_T10": 10.0}
  for r in runs:
    assert r.config.seed == r.seed
    if r.study.startswith("fmnist"):
      assert r.config.eval.pgd_steps == 20
      assert tuple(r.config.eval.adv_eps) == (4 / 255, 8 / 255, 16 / 255)
  rhos = sorted(r.config.method_config.rho for r in runs if r.study == "fmnist_rho")
  assert set(rhos) == {0.02, 0.3, 1.0}
  cifar_rho = [r for r in runs if r.study == "cifar_rho"]
  assert {r.config.method_config.rho for r in cifar_rho} == {0.01, 0.1}
  assert all(r.method == "dro_mixup" and r.config.model == "preact_resnet18" for r in cifar_rho)
  with pytest.raises(Exception, match="--studies"):
    reproduce.plan(["nope"], [0], SMOKE)


def test_claims_are_exclusive_and_a_dead_owner_s_claim_is_taken_over(tmp_path):
  workdir = str(tmp_path / "run")
  assert studies.try_claim(workdir)
  assert not studies.try_claim(workdir)  # held by a live process (this one)
  studies.release(workdir)
  assert studies.try_claim(workdir)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(os.path.join(workdir, studies.CLAIM), "w") as f:
    json.dump({"pid": dead.pid, "host": __import__("socket").gethostname()}, f)
  assert studies.try_claim(workdir)
  with open(os.path.join(workdir, studies.CLAIM), "w") as f:
    json.dump({"pid": dead.pid, "host": "another-machine"}, f)
  assert not studies.try_claim(workdir)  # cannot tell whether a remote owner lives


def test_a_diverged_run_is_recorded_skipped_and_reported_while_the_rest_go_on(tmp_path,
                                                                             monkeypatch):
  runs = reproduce.plan(["fmnist_rho"], [0, 1], SMOKE)
  calls = []

  def fake_run(spec, root, *args):
    calls.append(spec.seed)
    if spec.seed == 0:
      raise FloatingPointError("non-finite loss at step 3")
    os.makedirs(spec.workdir(root), exist_ok=True)
    with open(os.path.join(spec.workdir(root), "results.json"), "w") as f:
      json.dump({"clean_accuracy": 0.5, "adversarial_accuracy": {}, "train_seconds": 1.0}, f)

  def work():
    return studies.work(runs, root, lambda spec: reproduce.run_spec(spec, root, SMOKE, None, None),
                        log=lambda m: None)

  monkeypatch.setattr(reproduce, "run_spec", fake_run)
  root = str(tmp_path)
  assert work() == 1
  assert calls == [0, 1]
  assert "non-finite loss" in studies.failed(runs[0], root)
  assert studies.settled(runs[0], root) and studies.finished(runs[1], root)
  assert not os.path.exists(os.path.join(runs[0].workdir(root), studies.CLAIM))
  assert work() == 0
  assert calls == [0, 1]  # neither run again

  md = study_report.write_report(reproduce.STUDY, runs, root, str(tmp_path / "report"),
                                 scale_name="smoke", scale=SMOKE)
  summary = json.loads((tmp_path / "report" / "summary.json").read_text())
  assert summary["finished"] == 1 and summary["planned"] == 2
  assert "non-finite loss" in summary["failed"][runs[0].tag]
  md = open(md).read()
  assert "Runs that failed" in md and "non-finite loss at step 3" in md
  assert "1 of 2 runs finished" in md

  def broken(spec, root, *args):
    raise ValueError("a bug, not a divergence")

  monkeypatch.setattr(reproduce, "run_spec", broken)
  os.remove(os.path.join(runs[0].workdir(root), studies.FAILED))
  with pytest.raises(ValueError, match="a bug"):
    work()
  assert not os.path.exists(os.path.join(runs[0].workdir(root), studies.CLAIM))


# ------------------------------------------------------------------------------- end to end

def _tiny_data(path):
  rng = np.random.default_rng(0)
  for split, n in (("train", 48), ("test", 40)):
    labels = np.arange(n) % 10
    np.savez(path / f"cifar10_{split}.npz",
             images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels=labels)
    np.savez(path / f"fashion_mnist_{split}.npz",
             images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), labels=labels)


@pytest.mark.slow
def test_reproduce_end_to_end_resumes_and_reports(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  _tiny_data(data)
  root = tmp_path / "study"
  cache = tmp_path.parent / "drojax_reproduce_jax_cache"
  args = [sys.executable, "-m", "experiments.reproduce", f"--root={root}", f"--data_dir={data}",
          "--scale=smoke", "--studies=cifar_var_dro,fmnist_rho", "--seeds=0",
          f"--compilation_cache_dir={cache}"]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]

  # The corrupted sets: Hendrycks layout, the balanced subset, and exactly what
  # drojax.corruptions makes with the recorded key (recomputed here for one cell).
  import jax
  from drojax import corruptions
  from drojax.data import published_c

  folder = root / "corrupted" / "refined"
  idx = np.load(folder / "indices.npy")
  test = np.load(data / "cifar10_test.npz")
  assert np.bincount(test["labels"][idx], minlength=10).tolist() == [1] * 10
  images, labels = published_c.make_loader("cifar10", folder=str(folder))("contrast", 4)
  np.testing.assert_array_equal(labels, test["labels"][idx])
  key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
      jax.random.key(20261122), 1), SMOKE.corruption_names.index("contrast")), 4)
  want = corruptions.corrupt(jax.random.fold_in(key, 0),
                             test["images"][idx].astype(np.float32) / 255, name="contrast",
                             severity=4, table="refined")
  want = np.clip(np.rint(np.asarray(want) * 255), 0, 255)
  assert images.dtype == np.uint8 and images.shape == (10, 32, 32, 3)
  diff = np.abs(images.astype(int) - want)  # jit vs eager float rounding: at most one level
  assert diff.max() <= 1 and np.mean(diff == 0) > 0.99

  results = json.loads((root / "cifar_var_dro" / "var_dro" / "seed0" / "results.json")
                       .read_text())
  for table in ("standard", "refined"):
    block = results[f"corrupted_{table}"]
    cells = [v for per in block["corruption_accuracy"].values() for v in per.values()]
    assert len(cells) == len(SMOKE.corruption_names) * 5
    np.testing.assert_allclose(block["mean_corruption_accuracy"], np.mean(cells))
  rho = json.loads((root / "fmnist_rho" / "dro_mixup_rho0.5" / "seed0" / "config.json")
                   .read_text())
  assert rho["method_config"]["rho"] == 0.5 and rho["model"] == "small_cnn"

  md = (root / "report" / "results.md").read_text()
  assert "5 of 5 runs finished" in md
  assert "var_dro − erm" in md and "(1 seed)" in md
  for png in ("cifar_var_dro.png", "fmnist_rho_pareto.png"):
    assert (root / "report" / png).stat().st_size > 1000
  summary = json.loads((root / "report" / "summary.json").read_text())
  by_name = {r["name"]: r for r in summary["runs"]}
  assert by_name["var_dro"]["clean"] == results["clean_accuracy"]

  # A second call finds every run finished and trains nothing.
  before = (root / "cifar_var_dro" / "erm" / "seed0" / "results.json").stat().st_mtime_ns
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "start " not in proc.stdout + proc.stderr
  assert (root / "cifar_var_dro" / "erm" / "seed0" / "results.json").stat().st_mtime_ns == before


def test_bad_flags_exit_2_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  for extra, needle in ((["--scale=huge"], "scale"), (["--seeds=a"], "--seeds"),
                        (["--workers=0"], "--workers"), (["--studies=x"], "--studies")):
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce",
                           f"--root={tmp_path}", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (extra, proc.stderr[-2000:])
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
