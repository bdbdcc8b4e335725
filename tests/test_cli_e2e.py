"""End to end: the quick preset on digits through ``python -m experiments.cifar_c``.

Trains ``erm`` and ``dro_augmix`` (made even smaller with ``--config.*``), checks every output
file and its sections, kills a run with SIGKILL after its first checkpoint and checks that
re-running the same command completes, and that the workdir refuses another config.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    "--preset=quick", "--dataset=digits",
    "--config.model=tiny", "--config.train_subset=192", "--config.batch_size=32",
    "--config.eval.images=64", "--config.eval.batch_size=64",
    "--config.eval.corruption_names=contrast", "--config.eval.severities=1,5",
    "--config.eval.adv_eps=0.03", "--config.eval.pgd_steps=1",
    "--config.checkpoint_every_steps=3", "--config.log_every_steps=2",
]


def _env(cache):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _cmd(method, workdir, cache, *extra):
  return [sys.executable, "-m", "experiments.cifar_c", f"--method={method}",
          f"--workdir={workdir}", f"--compilation_cache_dir={cache}", *TINY, *extra]


def _check_outputs(workdir, method, epochs):
  for name in ("config.json", "metrics.jsonl", "results.json", "results.csv", "results.md"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert any(f.endswith(".png") for f in os.listdir(workdir)), os.listdir(workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  assert r["method"] == method and r["dataset"] == "digits"
  for key in ("clean_accuracy", "mean_corruption_accuracy", "train_seconds"):
    assert isinstance(r[key], (int, float)), key
  assert 0.0 <= r["clean_accuracy"] <= 1.0 and r["train_seconds"] > 0
  assert set(r["corruption_accuracy"]) == {"contrast"}
  assert set(r["corruption_accuracy"]["contrast"]) == {"1", "5"}
  assert len(r["adversarial_accuracy"]) == 1
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  assert rows and all("loss" in row or "train_loss" in row for row in rows if "step" in row)
  md = open(os.path.join(workdir, "results.md")).read().lower()
  for section in ("clean", "corrupt", "advers"):
    assert section in md, section
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_epochs"] == epochs


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One JAX compilation cache for the session (shared by xdist workers): the runs share the
  evaluation programs."""
  path = tmp_path_factory.getbasetemp().parent / "drojax_e2e_jax_cache"
  path.mkdir(exist_ok=True)
  return path


@pytest.mark.slow
def test_quick_preset_erm_end_to_end(tmp_path, cache):
  workdir = tmp_path / "erm"
  proc = subprocess.run(_cmd("erm", workdir, cache, "--config.num_epochs=2"), cwd=ROOT,
                        env=_env(cache), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _check_outputs(str(workdir), "erm", 2)
  # The run ends with its summary: the accuracies of results.json and the paths of the files.
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  tail = proc.stdout[proc.stdout.rindex("== erm on digits"):]
  assert f"clean {100 * r['clean_accuracy']:.1f}%" in tail
  assert f"mean corruption {100 * r['mean_corruption_accuracy']:.1f}%" in tail
  assert f"tables: {os.path.join(workdir, 'results.md')}" in tail
  assert os.path.join(workdir, "adversarial.png") in tail
  # Same workdir, another config: refused in one line with exit status 2.
  proc = subprocess.run(_cmd("erm", workdir, cache, "--config.num_epochs=2",
                             "--config.method_config.label_smoothing=0.1"), cwd=ROOT,
                        env=_env(cache), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "different config" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


def _logged_steps(workdir):
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [json.loads(line)["step"] for line in f if '"batch"' in line]
  except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or a line half-written
    return []


def _checkpoint_steps(workdir):
  steps = []
  for root, dirs, _ in os.walk(workdir):
    for d in dirs:
      if d.isdigit() and "checkpoint" in root:
        steps.append(int(d))
  return steps


@pytest.mark.slow
def test_quick_preset_dro_augmix_resumes_after_sigkill(tmp_path, cache):
  workdir = tmp_path / "dro_augmix"
  cmd = _cmd("dro_augmix", workdir, cache, "--config.num_epochs=3")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(cache), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None and not _checkpoint_steps(workdir):
      time.sleep(0.5)
    assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
    assert _checkpoint_steps(workdir), "no checkpoint within the time limit"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  done = subprocess.run(cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  _check_outputs(str(workdir), "dro_augmix", 3)


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_the_same_command_resumes(tmp_path, cache):
  workdir = tmp_path / "erm_interrupted"
  cmd = _cmd("erm", workdir, cache, "--config.num_epochs=3")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(cache), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    # Interrupt once training has logged a step: a checkpoint directory can become visible only
    # when the asynchronous save commits, as late as the run's exit, where a Ctrl-C is too late.
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None and not _logged_steps(workdir):
      time.sleep(0.1)
    assert proc.poll() is None, f"finished before Ctrl-C: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 130, err[-2000:]
  assert "Traceback" not in err, err[-3000:]
  assert "error: interrupted" in err.strip().splitlines()[-1]
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  done = subprocess.run(cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  _check_outputs(str(workdir), "erm", 3)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if '"batch"' in line]
  assert steps == sorted(set(steps)), steps  # each logged step once across the interruption
