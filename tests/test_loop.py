"""Tests for drojax.loop.fit: metrics.jsonl, checkpoints at the right places, exact resume
(in-process and after a real SIGKILL of a training subprocess), and the NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import checkpoint, loop, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BATCH = 12, 3  # 4 steps per epoch


def _batches(epoch, start_batch):
  order = np.random.default_rng([7, epoch]).permutation(N)
  for i in range(start_batch, N // BATCH):
    idx = order[i * BATCH:(i + 1) * BATCH]
    yield {"x": idx.astype(np.float32), "id": idx}


def _state():
  return train.TrainState(params={"w": jnp.zeros(3)}, batch_stats={}, opt_state=(),
                          step=jnp.zeros((), jnp.int32),
                          key=jax.random.key_data(jax.random.key(0)))


def _make_step(nan_at=None, term="penalty"):
  @jax.jit
  def core(state, x):
    # An order-dependent update, so a wrong data position changes the result.
    noise = jax.random.uniform(jax.random.fold_in(jax.random.wrap_key_data(state.key),
                                                  state.step), (3,))
    w = 0.5 * state.params["w"] + x + noise
    return state.replace(params={"w": w}, step=state.step + 1), jnp.sum(w)

  def step(state, batch):
    state, loss = core(state, jnp.asarray(batch["x"]))
    metrics = {"loss": loss, "accuracy": jnp.float32(0.5)}
    if nan_at is not None:
      metrics[term] = jnp.float32(np.nan if int(state.step) == nan_at else 1.0)
    return state, metrics

  return step


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_fit_logs_checkpoints_and_resumes_exactly(tmp_path):
  full = loop.fit(_state(), _make_step(), _batches, num_epochs=3, steps_per_epoch=4,
                  workdir=str(tmp_path / "a"), checkpoint_every_steps=3, keep_checkpoints=10,
                  progress=False, eval_fn=lambda state, epoch: {"accuracy": float(epoch) / 10})
  assert full.steps == 12 and full.resumed_from is None
  evals = [r for r in _records(tmp_path / "a") if "eval_accuracy" in r]
  assert [(r["epoch"], r["step"], r["eval_accuracy"]) for r in evals] == [
      (0, 4, 0.0), (1, 8, 0.1), (2, 12, 0.2)]
  recs = [r for r in _records(tmp_path / "a") if "loss" in r]
  assert [r["step"] for r in recs] == list(range(1, 13))
  # Every 3 steps (not at an epoch end) plus each epoch end.
  assert checkpoint.Checkpointer(tmp_path / "a" / "checkpoints").all_steps() == [3, 4, 6, 8, 9,
                                                                                 12]

  class Crash(Exception):
    pass

  def crash(step, metrics):
    if step == 7:
      raise Crash

  with pytest.raises(Crash):
    loop.fit(_state(), _make_step(), _batches, num_epochs=3, steps_per_epoch=4,
             workdir=str(tmp_path / "b"), checkpoint_every_steps=3, progress=False,
             on_step=crash)
  again = loop.fit(_state(), _make_step(), _batches, num_epochs=3, steps_per_epoch=4,
                   workdir=str(tmp_path / "b"), checkpoint_every_steps=3, progress=False)
  assert again.resumed_from == 6  # mid-epoch 2 (epoch 1, batch 2)
  np.testing.assert_array_equal(again.state.params["w"], full.state.params["w"])
  # Records written after the checkpoint were dropped and redone: each step once.
  assert [r["step"] for r in _records(tmp_path / "b") if "loss" in r] == list(range(1, 13))
  # A finished run re-run does nothing more.
  done = loop.fit(_state(), _make_step(), _batches, num_epochs=3, steps_per_epoch=4,
                  workdir=str(tmp_path / "b"), progress=False)
  assert done.steps == 12 and done.resumed_from == 12


def test_train_seconds_sum_over_resumed_runs_from_the_checkpoints(tmp_path, monkeypatch):
  # A clock that advances 1 s per step: the totals are exact step counts.
  clock = [0.0]
  monkeypatch.setattr(loop, "_clock", lambda: clock[0])

  def tick(step, metrics):
    clock[0] += 1.0
    if step == 7 and crash_at_7:
      raise KeyboardInterrupt

  kw = dict(num_epochs=3, steps_per_epoch=4, workdir=str(tmp_path), checkpoint_every_steps=3,
            progress=False, on_step=tick)
  crash_at_7 = True
  with pytest.raises(KeyboardInterrupt):
    loop.fit(_state(), _make_step(), _batches, **kw)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  assert [ckpt.restore(s, _state()).meta["seconds"] for s in ckpt.all_steps()] == [3.0, 4.0, 6.0]
  ckpt.close()
  crash_at_7 = False
  # Resumed at step 6 (6 s): 6 more steps; the 7th step's second, lost with the step, is not
  # counted. A finished run reports the recorded total.
  assert loop.fit(_state(), _make_step(), _batches, **kw).train_seconds == 12.0
  assert loop.fit(_state(), _make_step(), _batches, **kw).train_seconds == 12.0


@pytest.mark.parametrize("term,expected", [("penalty", "penalty"), ("weights_max_ratio", "weights"),
                                           ("grad_norm", "gradient")])
def test_nan_guard_names_step_and_term_and_keeps_last_good_checkpoint(tmp_path, term, expected):
  with pytest.raises(loop.NonFiniteError) as err:
    loop.fit(_state(), _make_step(nan_at=6, term=term), _batches, num_epochs=3,
             steps_per_epoch=4, workdir=str(tmp_path), checkpoint_every_steps=3, progress=False)
  e = err.value
  assert e.step == 6 and e.term == expected and e.last_checkpoint == 4
  assert "step 6" in str(e) and f"non-finite {expected}" in str(e)
  assert isinstance(e, FloatingPointError)
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == [3, 4]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
  worker = os.path.join(ROOT, "tests", "loop_worker.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  os.makedirs(killed)
  proc = subprocess.Popen([sys.executable, worker, killed, "--pause_at", "7"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  ref = subprocess.run([sys.executable, worker, straight], env=env, capture_output=True,
                       text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  deadline = time.time() + 600
  while not os.path.exists(os.path.join(killed, "paused")):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, "final.npz"))
  resumed = subprocess.run([sys.executable, worker, killed], env=env, capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed_from 6" in resumed.stdout  # checkpoint after step 6 = epoch 1, batch 2
  with np.load(os.path.join(straight, "final.npz")) as a, \
       np.load(os.path.join(killed, "final.npz")) as b:
    assert a.files == b.files
    for k in a.files:
      assert a[k].dtype == b[k].dtype
      np.testing.assert_array_equal(a[k], b[k])  # bitwise


def test_the_bar_says_compiling_during_the_first_step_and_times_the_rest(capsys):
  fast = _make_step()
  calls = []

  def step(state, batch):
    calls.append(1)
    if len(calls) == 1:
      time.sleep(2.5)  # as long as a compilation
    return fast(state, batch)

  loop.fit(_state(), step, _batches, num_epochs=1, steps_per_epoch=4, workdir=None,
           progress=True)
  err = capsys.readouterr().err
  assert "epoch 1/1: 0/4 compiling the train step..." in err, err
  last = err.replace("\r", "\n").strip().splitlines()[-1]
  # The clock restarted after the first step: 2.5 s of "compiling" are not in the elapsed time.
  assert "4/4 [00:00<00:00" in last, last
