"""experiments.robustness_study: the plan, bad flags, and a two-run smoke study end to end."""

import json
import os
import subprocess
import sys

import pytest

from experiments import reproduce, studies  # noqa: F401  (the study CLIs import together)
from experiments import group_shift  # noqa: F401
from experiments import robustness_study as study
from tests._shared_data import write_tiny_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_runs_what_exists_and_lists_the_missing(monkeypatch):
  from drojax import methods

  monkeypatch.setattr(methods, "method_names", lambda: ["erm", "dro", "dro_mixup"])
  runs, missing = study.plan(["methods", "modes"], [0, 1], study.SCALES["smoke"])
  assert missing == ["pgd_at", "trades"]
  assert len(runs) == 2 * (5 + 5)
  assert len({r.workdir("/r") for r in runs}) == len(runs)
  by = {(r.name, r.seed): r.config for r in runs}
  assert by[("dro_rho0.3", 1)].method_config.rho == 0.3
  assert by[("mode_exact", 0)].method_config.penalty_mode == "exact"
  assert by[("mode_subsample0.1", 0)].method_config.penalty_subsample == 0.1
  assert by[("mode_subsample0.1", 0)].method_config.rho == study.MODE_RHO
  c = by[("erm", 0)]
  assert c.eval.attack == "suite" and c.seed == 0
  assert [round(e * 255) for e in c.eval.adv_eps] == [4, 8, 16]
  only8 = study.SCALES["smoke"].replace(eps=(8,))
  runs, _ = study.plan(["methods"], [0], only8)
  assert all([round(e * 255) for e in r.config.eval.adv_eps] == [8] for r in runs)


def test_shards_deal_every_run_once_with_the_costly_ones_spread():
  runs, _ = study.plan(["methods", "modes"], [0, 1, 2], study.SCALES["smoke"])
  for count in (1, 2, 5, 6, 7):
    shares = [studies.shard(runs, i, count, cost=study.cost) for i in range(count)]
    dealt = [r.workdir("/r") for share in shares for r in share]
    assert sorted(dealt) == sorted(r.workdir("/r") for r in runs)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # The 6 adversarial-training runs (3x the cost) land on different shards while they can.
    costly = [sum(r.method in ("pgd_at", "trades") for r in share) for share in shares]
    assert max(costly) - min(costly) <= 1, (count, costly)
  with pytest.raises(ValueError, match="shard index"):
    studies.shard(runs, 3, 3)


@pytest.mark.slow
def test_smoke_study_end_to_end_stops_resumes_and_reports(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  write_tiny_fashion_mnist(data)
  root = tmp_path / "study"
  cmd = [sys.executable, "-m", "experiments.robustness_study", f"--root={root}",
         f"--data_dir={data}", "--scale=smoke", "--seeds=0", "--runs=erm,mode_subsample0.1",
         f"--compilation_cache_dir={tmp_path.parent / 'drojax_robustness_jax_cache'}"]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  # A time limit that stops both workers before any run finishes: the report covers none.
  proc = subprocess.run(cmd + ["--workers=2", "--time_limit=1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Once, under load, a worker trained on: its SIGTERM landed inside JAX's gc callback, where
  # Python drops the exception (experiments.shutdown now sends it again; tests/test_faults.py).
  assert "stopped at the time limit (1 s); 2 runs are left" in proc.stdout, proc.stdout[-2000:]
  assert "0 of 2 runs finished" in (root / "report" / "robustness.md").read_text()
  # The same command with room: the two workers (how a GPU runs the study, docs/robustness.md)
  # each train one run, logging its done line with the headline numbers.
  proc = subprocess.run(cmd + ["--workers=2", "--time_limit=800"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "report: " in proc.stdout and "time limit" not in proc.stdout
  done = [line for i in (0, 1) for line in (root / "logs" / f"worker{i}.log").read_text()
          .splitlines() if "] done  " in line]
  assert len(done) == 2 and all(line.startswith("[worker ") and "suite 8/255 " in line
                                for line in done), done
  assert {line.split()[3] for line in done} == {"methods/erm/seed0",
                                                "modes/mode_subsample0.1/seed0"}
  r = json.loads((root / "methods" / "erm" / "seed0" / "results.json").read_text())
  assert set(r["adversarial_by_attack"]) == {"apgd_ce", "apgd_t", "fab_t", "square"}
  assert set(r["pgd20_accuracy"]) == {"0.0156863", "0.0313725", "0.0627451"}
  md = (root / "report" / "robustness.md").read_text()
  assert "| erm | 1 |" in md and "| mode_subsample0.1 | 1 |" in md
  clean = f"| erm | 1 | {100 * r['clean_accuracy']:.2f} (1 seed) |"  # percent, not x100 twice
  assert clean in md, md
  assert f"{r['train_seconds']:.1f} (1 seed) |" in md
  summary = json.loads((root / "report" / "summary.json").read_text())
  cell = summary["cells"]["methods/erm"]["suite8"]
  assert cell["n"] == 1 and cell["mean"] == r["adversarial_by_attack"]["square"]["0.0313725"]
  assert (root / "report" / "suite_vs_time.png").stat().st_size > 1000
  # Third pass: one shard of one (a process of a fixed share) finds both runs finished.
  proc = subprocess.run(cmd + ["--shard=0/1"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count("finished before, skipped") == 2 and "shard 0/1 done" in proc.stdout


def test_bad_flags_exit_2_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  for extra, needle in ((["--scale=huge"], "scale"), (["--seeds=a"], "--seeds"),
                        (["--runs=ermm"], "--runs"), (["--width=0"], "--width"),
                        (["--shard=2/2"], "--shard"), (["--shard=a"], "--shard"),
                        (["--shard=0/2", "--time_limit=9"], "--shard"),
                        (["--time_limit=-1"], "--time_limit"),
                        (["--eps=5"], "--eps"), (["--eps=8,x"], "--eps")):
    proc = subprocess.run([sys.executable, "-m", "experiments.robustness_study",
                           f"--root={tmp_path}", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (extra, proc.stderr[-2000:])
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_scale_replace_refuses_a_name_it_does_not_have():
  smoke = study.SCALES["smoke"]
  assert smoke.replace(width=6).width == 6 and smoke.width == 4
  with pytest.raises(TypeError, match="Scale has no field widht; its fields: .*width"):
    smoke.replace(widht=6)
