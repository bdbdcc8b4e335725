"""experiments.group_shift: selection on validation, the 95 % intervals, and the study command
end to end on colored_digits (tiny: 2 epochs, width 4), resumed; JTT's two stages resumed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(val_worst, val_acc, test_worst, test_acc, seconds=1.0):
  return {"validation": {"accuracy": val_acc, "group_accuracy": {"worst_group": val_worst}},
          "group_accuracy": {"worst_group": test_worst}, "clean_accuracy": test_acc,
          "train_seconds": seconds}


def test_summary_selects_on_validation_and_reports_t_intervals():
  from drojax import groups
  from experiments import group_shift

  runs = [("m", "a", 0, _run(0.5, 0.9, 0.40, 0.80)), ("m", "a", 1, _run(0.5, 0.9, 0.60, 0.82)),
          ("m", "b", 0, _run(0.6, 0.7, 0.10, 0.70)), ("m", "b", 1, _run(0.7, 0.7, 0.30, 0.72))]
  out = group_shift.summarize(runs)["m"]
  # worst-group rule: b's mean validation worst group 0.65 > a's 0.5; average rule: a (0.9).
  assert out["worst_group"]["chosen"] == "b" and out["average"]["chosen"] == "a"
  # 95 % t-interval of two values: t_{0.975, 1} = 12.7062 x sd / sqrt(2) (the reports' t table,
  # formatting.T975, has 3 decimals).
  half = 12.706204736 * np.std([0.10, 0.30], ddof=1) / np.sqrt(2)
  np.testing.assert_allclose(out["worst_group"]["test_worst_group"], 0.20)
  np.testing.assert_allclose(out["worst_group"]["test_worst_group_ci95"], half, rtol=5e-5)
  np.testing.assert_allclose([out[rule]["validation_score"] for rule in ("worst_group", "average")],
                             [0.65, 0.9])
  np.testing.assert_allclose(out["average"]["test_average"], 0.81)
  validation = [r["validation"] for *_, r in runs]
  assert groups.select(validation, "worst_group") == 3
  assert groups.select(validation, "average") == 0


def test_study_end_to_end_diagnostics_and_resume(tmp_path):
  """One study command (var_dro over its grid, one seed, diagnostics on) in two worker
  processes, which get the --config.* overrides: selection read back from the runs' own
  results.json, the diagnostics' arrays and plot, and a re-run that trains nothing. One command
  for both checks: each run's cost is mostly compilation."""
  work = tmp_path / "study"
  cmd = [sys.executable, "-m", "experiments.group_shift", "--benchmark=colored_digits",
         "--preset=quick", "--methods=var_dro", "--seeds=0", f"--workdir={work}",
         "--compilation_cache_dir=none", "--config.num_epochs=2", "--config.width=4",
         "--config.var_dro_diagnostics=true", "--config.progress=false"]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  first = subprocess.run(cmd + ["--workers=2"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  assert sorted(os.listdir(work / "logs")) == ["worker0.log", "worker1.log"]
  summary = json.loads((work / "group_shift.json").read_text())
  assert set(summary) == {"var_dro"}
  # var_dro was tuned over its grid: the chosen eps_max has the best validation worst-group
  # accuracy (average rule: the best validation accuracy), read back from results.json.
  labels = ("var_dro_eps_max_0.5", "var_dro_eps_max_2")
  rs = {label: json.loads((work / "var_dro" / label / "seed_0" / "results.json").read_text())
        for label in labels}
  assert all(r["validation"]["num_validation"] == 359 for r in rs.values())
  for rule, score in (("worst_group", lambda r: r["validation"]["group_accuracy"]["worst_group"]),
                      ("average", lambda r: r["validation"]["accuracy"])):
    chosen = summary["var_dro"][rule]
    assert chosen["chosen"] == max(labels, key=lambda k: score(rs[k])) and chosen["seeds"] == 1
    r = rs[chosen["chosen"]]
    assert chosen["test_worst_group"] == r["worst_group_accuracy"] == (
        r["group_accuracy"]["worst_group"])
    assert chosen["test_average"] == r["clean_accuracy"]
  assert "| var_dro | worst_group |" in (work / "group_shift.md").read_text()
  # The diagnostics of the eps_max = 0.5 run.
  run_dir = work / "var_dro" / labels[0] / "seed_0"
  d = np.load(run_dir / "var_dro_diagnostics.npz")
  assert d["epoch"].tolist() == [0, 1] and d["var"].shape == (2, 1078)
  seen = ~np.isnan(d["weight"])
  assert seen.sum(1).tolist() == [1078 // 64 * 64] * 2
  # One EMA update per example by the end of epoch 0: variance 0, uniform weights; after that
  # each batch's weights B q_i still average 1 (the q_i of a batch sum to 1).
  np.testing.assert_allclose(d["weight"][0][seen[0]], 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.nanmean(d["weight"][1]), 1.0, rtol=1e-5)
  assert (d["var"][1] > 0).any()
  assert (run_dir / "var_dro_diagnostics.png").is_file()
  results = rs[labels[0]]
  assert set(results["var_dro_diagnostics"]["last_epoch"]) >= {"var_group0", "weight_flipped"}
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert sum("eval_var_group1" in r for r in records) == 2
  # Re-running the command reads every finished run back and trains nothing.
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before, skipped") == 2, again.stdout


def test_prepare_fills_counts_and_uses_groups_as_environments():
  from drojax import data, methods
  from experiments import cli, groups

  ds = data.ArrayDataset.create(np.zeros((6, 8, 8, 3), np.uint8), np.array([0, 1] * 3),
                                groups=np.array([0, 1, 2, 2, 1, 0]), name="toy")
  config, same = groups.prepare("group_dro", methods.MethodConfig(), ds)
  assert (config.num_groups, config.group_counts, same) == (3, (2, 2, 2), ds)
  config, with_envs = groups.prepare("vrex", methods.MethodConfig(), ds)
  assert config.num_environments == 3
  np.testing.assert_array_equal(with_envs.environments, ds.groups)
  assert groups.prepare("erm", methods.MethodConfig(), ds)[1] is ds
  with pytest.raises(cli.UsageError, match="num_groups=2, but the training data has groups ids "
                     "up to 2"):
    groups.check("group_dro", methods.MethodConfig(num_groups=2), ds)
  with pytest.raises(cli.UsageError, match=r"group_counts=\(1, 1, 4\), but the training data "
                     r"has \(2, 2, 2\)"):
    groups.check("group_dro", methods.MethodConfig(group_counts=(1, 1, 4)), ds)


def test_jtt_two_stages_resume_in_either_stage(tmp_path):
  work = tmp_path / "jtt"
  run_dir = work / "jtt" / "preset" / "seed_0"
  steps_per_epoch = 1078 // 64
  cmd = [sys.executable, "-m", "experiments.group_shift", "--benchmark=colored_digits",
         "--preset=quick", "--methods=jtt", "--seeds=0", "--grid=none", f"--workdir={work}",
         "--compilation_cache_dir=none", "--config.num_epochs=2", "--config.width=4",
         "--config.method_config.jtt_epochs=1", "--config.progress=false",
         f"--config.checkpoint_every_steps={steps_per_epoch}"]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")

  def run():
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())

  first = run()
  assert first["steps"] == 3 * steps_per_epoch  # 1 identification epoch + 2 epochs
  identification = (run_dir / "identification" / "metrics.jsonl").read_text()
  # Stage 1 is read back finished (trains nothing) and stage 2 resumes from its epoch-1
  # checkpoint, its last one removed: the second epoch is trained again, the same model.
  (run_dir / "results.json").unlink()
  stage2 = sorted((run_dir / "checkpoints").iterdir(), key=lambda p: int(p.name))
  assert len(stage2) == 2, stage2
  import shutil
  shutil.rmtree(stage2[-1])
  again = run()
  assert (run_dir / "identification" / "metrics.jsonl").read_text() == identification
  assert again["group_accuracy"] == first["group_accuracy"]
  assert again["clean_accuracy"] == first["clean_accuracy"]


def test_var_dro_diagnostics_flipped_labels_only_where_there_is_label_noise(monkeypatch):
  from types import SimpleNamespace

  from drojax.data import group_shift as gsd
  from experiments import var_dro_diagnostics as diag
  from experiments.configs import group_shift as gs_config

  config = gs_config.make_config("var_dro", preset="quick", dataset="dominoes")
  train_ds = SimpleNamespace(ids=np.array([2, 0]))
  for flipped, want in (([False] * 4, None), ([False, False, True, False], [True, False])):
    full = SimpleNamespace(dataset=SimpleNamespace(ids=np.arange(4)),
                           label_flipped=np.array(flipped))
    monkeypatch.setattr(gsd, "load_group_shift", lambda *a, full=full, **k: full)
    got = diag._flipped(config, train_ds)
    # no label noise (dominoes): no flipped-vs-clean split (an empty one broke the plot)
    assert got is None if want is None else got.tolist() == want


def test_var_dro_diagnostics_need_a_var_dro_method():
  from drojax import data
  from experiments import cli, train
  from experiments.configs import group_shift as gs_config

  # On a method without the tracker it is one clear error, before anything is written.
  config = gs_config.make_config("erm", preset="quick")
  with config.unlocked():
    config.var_dro_diagnostics = True
  train_ds = data.load_dataset("colored_digits", "train")
  with pytest.raises(cli.UsageError, match="var_dro_diagnostics=true needs a Var-DRO method"):
    train.check_data(config, train_ds, train_ds, data_dir=None)


def test_help_lists_the_methods_and_datasets():
  out = subprocess.run([sys.executable, "-m", "experiments.group_shift", "--help"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  for word in ("--benchmark", "--seeds", "--workdir", "group_dro", "jtt", "vrex", "irm",
               "var_dro_vrex", "colored_digits", "colored_fashion_mnist", "dominoes"):
    assert word in out.stdout, word
  assert "--logtostderr" not in out.stdout  # absl's own flags are left out


def test_sweep_table_shows_worst_group_accuracy(tmp_path):
  from experiments import sweep

  dirs = []
  for i, worst in enumerate((0.25, 0.5)):
    d = tmp_path / f"run{i}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({
        "clean_accuracy": 0.8, "mean_corruption_accuracy": None, "train_seconds": 3.0,
        "group_accuracy": {"worst_group": worst}}))
    dirs.append(str(d))
  sweep.summarize(str(tmp_path), "eps_max", [0.5, 2.0], dirs)
  table = (tmp_path / "sweep.md").read_text()
  assert "| worst-group accuracy |" in table
  assert "| 0.5 | 80.00% | n/a | 25.00% | 3 |" in table
  assert json.loads((tmp_path / "sweep.json").read_text())["runs"][1]["worst_group_accuracy"] == 0.5


def test_penalty_anneal_at_the_papers_fraction_of_the_steps():
  from experiments import group_shift
  from experiments.configs import group_shift as gs_config

  config = gs_config.make_config("irm", preset="quick")  # 8 epochs of 64
  # 8 * (1078 // 64) = 128 steps; 190 / 501 of them is 48.5 -> 49.
  assert group_shift.anneal_steps(1078, config) == round(190 / 501 * 128) == 49
  with config.unlocked():
    config.train_subset = 640
  assert group_shift.anneal_steps(1078, config) == round(190 / 501 * 80) == 30


def test_bad_flags_exit_2_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  for extra, needle in ((["--seeds=0,0"], "--seeds must be distinct"), (["--grid=x"], "--grid"),
                        (["--benchmark=x"], "--benchmark"), (["--shard=1/1"], "--shard")):
    proc = subprocess.run([sys.executable, "-m", "experiments.group_shift", "--methods=erm",
                           f"--workdir={tmp_path}", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (extra, proc.stderr[-2000:])
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
  assert not os.listdir(tmp_path)
