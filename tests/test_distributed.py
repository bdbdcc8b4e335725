"""Several processes for real: 2 processes x 2 CPU devices on localhost against 1 process x 4.

Every run goes through the CLI (``python -m experiments.fashion_mnist_pgd --methods=erm,dro,
var_dro``, which trains and evaluates each method in turn with ``experiments.train.train_and_evaluate``), with
``DROJAX_DISTRIBUTED=1`` and the README's variables for the two-process runs. The final train
states (read from the orbax checkpoints), every ``metrics.jsonl`` record and ``results.json``
must equal those of the one-process run with the same 4 devices and global batch; a run whose
process 0 is SIGKILLed after a checkpoint and restarted must end where the uninterrupted one does.
Every wait has a timeout and every process started here is killed when a check fails.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("erm", "dro", "var_dro")
STEPS = 8  # train_subset / batch_size: 8 steps, one epoch
ARGS = [
    "--dataset=digits", "--preset=quick", "--config.model=tiny", "--config.width=4",
    "--config.optimizer=sgd", "--config.learning_rate=0.05", "--config.batch_size=16",
    "--config.train_subset=128", "--config.num_epochs=1", "--config.warmup_epochs=0",
    "--config.log_every_steps=1",
    "--config.eval.images=32", "--config.eval.batch_size=32",
    "--config.eval.corruption_names=contrast", "--config.eval.severities=3",
    "--config.eval.adv_eps=0.03", "--config.eval.pgd_steps=1", "--config.progress=false",
]
RUN_TIMEOUT_S = 600


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict[str, str]:
  # Without the variables JAX's cluster detection reads (CI may run under SLURM or Kubernetes).
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("DROJAX_", "JAX_", "SLURM_", "OMPI_", "TPU_", "MEGASCALE_"))
         and k not in ("XLA_FLAGS", "KUBERNETES_SERVICE_HOST")}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), **extra)
  return env


@contextlib.contextmanager
def _processes():
  """A list to start processes into; all still running are SIGKILLed on the way out."""
  procs: list[subprocess.Popen] = []
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for p in procs:
      with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=30)


def _start(procs, root, methods, log, env, extra=()):
  # A compilation cache of the test's own: the restarted runs reuse the first runs' programs.
  cache = f"--compilation_cache_dir={os.path.join(os.path.dirname(root), 'jax_cache')}"
  with open(log, "w") as out:
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "experiments.fashion_mnist_pgd", f"--methods={methods}",
         f"--workdir={root}", cache, *ARGS, *extra], cwd=ROOT, env=env, stdout=out,
        stderr=subprocess.STDOUT))
  return procs[-1]


def _start_pair(procs, root, methods, logs, extra=()):
  port = _free_port()
  return [_start(procs, root, methods, logs[i], _env(
      2, DROJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
      DROJAX_NUM_PROCESSES="2", DROJAX_PROCESS_ID=str(i), DROJAX_DISTRIBUTED_TIMEOUT="120"),
      extra) for i in (0, 1)]


def _wait(procs, logs, deadline):
  for p, log in zip(procs, logs):
    try:
      rc = p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      rc = "timeout"
    if rc != 0:
      with open(log) as f:
        tail = f.read()[-3000:]
      raise AssertionError(f"{' '.join(p.args[2:5])} ended with {rc}:\n{tail}")


def _state(workdir):
  """The final train state of a run as NumPy arrays, from its latest orbax checkpoint."""
  import jax
  import orbax.checkpoint as ocp

  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  ckpt = ocp.PyTreeCheckpointer()
  meta = ckpt.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", None), "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return steps[-1], ckpt.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _max_diff(a, b):
  import jax

  la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             if np.size(x) else 0.0 for (_, x), (_, y) in zip(la, lb))


def _compare(ref, other, *, state_tol, metric_tol):
  """Max |difference| of the final states and of the logged metrics; asserts the tolerances."""
  step_a, a = _state(ref)
  step_b, b = _state(other)
  assert step_a == step_b == STEPS, (step_a, step_b)
  state_diff = _max_diff(a, b)
  ma, mb = _metrics(ref), _metrics(other)
  assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, STEPS + 1))
  metric_diff = max(abs(ra[k] - rb[k]) for ra, rb in zip(ma, mb) for k in ra)
  assert state_diff <= state_tol and metric_diff <= metric_tol, (state_diff, metric_diff)
  return state_diff, metric_diff


def _two_and_one(base):
  """1 process x 4 devices and 2 processes x 2 devices, each training erm, dro, var_dro."""
  one, two = base / "one", base / "two"
  t0 = time.monotonic()
  with _processes() as procs:
    logs = [base / "p0.log", base / "p1.log", base / "single.log"]
    pair = _start_pair(procs, two, ",".join(METHODS), logs[:2])
    # The single-process reference runs beside the pair (2 cores: the pair mostly waits on
    # each other's collectives).
    single = _start(procs, one, ",".join(METHODS), logs[2], _env(4))
    _wait([*pair, single], logs[:2] + logs[2:], time.monotonic() + RUN_TIMEOUT_S)
  return {"one": one, "two": two, "seconds": time.monotonic() - t0, "base": base}


def _check_method(runs, method):
  state_diff, metric_diff = _compare(runs["one"] / method, runs["two"] / method,
                                     state_tol=1e-5, metric_tol=1e-5)
  print(f"{method}: max |state diff| {state_diff:.3g}, max |metric diff| {metric_diff:.3g}, "
        f"runs took {runs['seconds']:.0f} s")
  one = json.loads((runs["one"] / method / "results.json").read_text())
  two = json.loads((runs["two"] / method / "results.json").read_text())
  assert two["steps"] == one["steps"] == STEPS
  for key in ("clean_accuracy", "mean_corruption_accuracy"):
    assert two[key] == one[key], key
  assert json.dumps(two["adversarial"], sort_keys=True) == json.dumps(one["adversarial"],
                                                                      sort_keys=True)
  # One writer: no temporary file left behind, the metrics written once per step (checked in
  # _compare), and the comparison of the methods written by process 0.
  two_dir = runs["two"] / method
  assert not [f for f in os.listdir(two_dir) if f.endswith(".tmp")], os.listdir(two_dir)
  assert json.loads((two_dir / "config.json").read_text())["method"] == method
  assert any(f.startswith("comparison") for f in os.listdir(runs["two"]))


def _check_sigkill_of_process_0_then_restart(runs):
  root = runs["base"] / "killed"  # beside the first runs: their compilation cache serves here
  workdir = root / "var_dro"
  logs = [runs["base"] / "killed_p0.log", runs["base"] / "killed_p1.log"]
  extra = ["--config.checkpoint_every_steps=1"]  # does not change what is trained
  with _processes() as procs:
    pair = _start_pair(procs, root, "var_dro", logs, extra)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    ckpts = workdir / "checkpoints"
    while not (ckpts.is_dir() and any(d.isdigit() and int(d) >= 2 for d in os.listdir(ckpts))):
      assert time.monotonic() < deadline, "no checkpoint appeared"
      assert pair[0].poll() is None and pair[1].poll() is None, logs[0].read_text()[-3000:]
      time.sleep(0.01)
    pair[0].send_signal(signal.SIGKILL)
    # Process 1 loses its coordinator; a scheduler restarts the whole job, as we do here.
    with contextlib.suppress(subprocess.TimeoutExpired):
      pair[1].wait(timeout=5)
    pair[1].kill()
    pair[1].wait(timeout=30)
    done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert done and done[-1] < STEPS, f"the run finished before the kill: {done}"
    assert not (workdir / "results.json").exists()
    pair = _start_pair(procs, root, "var_dro", logs, extra)
    _wait(pair, logs, time.monotonic() + RUN_TIMEOUT_S)
  assert "resuming" in logs[0].read_text()
  state_diff, metric_diff = _compare(runs["two"] / "var_dro", workdir, state_tol=0.0,
                                     metric_tol=0.0)
  print(f"resumed after SIGKILL at checkpoint {done[-1]}: state diff {state_diff}, "
        f"metric diff {metric_diff}")
  resumed = json.loads((workdir / "results.json").read_text())
  uninterrupted = json.loads((runs["two"] / "var_dro" / "results.json").read_text())
  assert resumed["clean_accuracy"] == uninterrupted["clean_accuracy"]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly_after_sigkill(tmp_path):
  # One test, not a module fixture shared by several: under pytest-xdist each worker would
  # start the runs again.
  t0 = time.monotonic()
  runs = _two_and_one(tmp_path)
  for method in METHODS:
    _check_method(runs, method)
  _check_sigkill_of_process_0_then_restart(runs)
  print(f"all runs: {time.monotonic() - t0:.0f} s")


def test_unreachable_coordinator_is_one_line_and_exit_1(tmp_path):
  def start(**env):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "experiments.cifar_c", "--dataset=digits",
                           f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=_env(1, **env),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert "distributed start-up failed" in lines[0], lines[0]
    return lines[0], time.monotonic() - t0

  address = f"127.0.0.1:{_free_port()}"
  line, seconds = start(DROJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=address,
                        DROJAX_NUM_PROCESSES="2", DROJAX_PROCESS_ID="1",
                        DROJAX_DISTRIBUTED_TIMEOUT="2")
  assert f"process 1 could not join all processes through {address}" in line
  assert seconds < 60
  line, _ = start(DROJAX_DISTRIBUTED="1", DROJAX_DISTRIBUTED_TIMEOUT="30")
  assert "found no cluster to join" in line and "JAX_COORDINATOR_ADDRESS is not set" in line
  assert not (tmp_path / "w").exists()  # nothing written before the processes joined


# ------------------------------------------------------------------------------- unit checks


def test_process_rows_are_the_rows_of_this_process_devices():
  import types

  import jax

  from drojax.data import process_rows
  from drojax.train import make_mesh

  np.testing.assert_array_equal(process_rows(make_mesh(), 8), np.arange(8))

  def mesh(owners):
    devs = np.array([types.SimpleNamespace(process_index=p) for p in owners], dtype=object)
    return types.SimpleNamespace(devices=devs)

  me = jax.process_index()  # 0 here
  np.testing.assert_array_equal(process_rows(mesh([me, me, me + 1, me + 1]), 8), [0, 1, 2, 3])
  np.testing.assert_array_equal(process_rows(mesh([me + 1, me + 1, me, me]), 8), [4, 5, 6, 7])
  np.testing.assert_array_equal(process_rows(mesh([me, me + 1, me, me + 1]), 8), [0, 1, 4, 5])
  for owners, batch in (([me, me, me, me + 1], 8), ([me + 1, me + 2], 8), ([me, me + 1], 3)):
    with pytest.raises(ValueError):
      process_rows(mesh(owners), batch)
  from drojax.data import ArrayDataset, epoch_batches

  ds = ArrayDataset.create(np.zeros((16, 2, 2, 1), np.uint8), np.arange(16) % 2)
  for rows in ([3, 1], [0, 8], [], [0, 0]):
    with pytest.raises(ValueError, match="rows must be ascending"):
      next(epoch_batches(ds, batch_size=8, seed=0, epoch=0, rows=np.asarray(rows, int)))


# Two processes x 2 CPU devices on a mesh that interleaves them (devices of process 0, 1, 0, 1,
# as a TPU topology may order them): each loads its rows of a global batch, shard_batch
# assembles it, and every process reads back the global batch of a one-process run.
_INTERLEAVED = r"""
import json, os, sys
import jax, numpy as np
jax.distributed.initialize(os.environ["ADDRESS"], 2, int(sys.argv[1]), initialization_timeout=60)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from drojax import data
by_process = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
mesh = Mesh(np.array([by_process[i] for i in (0, 2, 1, 3)]), ("data",))
ds = data.ArrayDataset.create(np.zeros((24, 2, 2, 1), np.uint8), np.arange(24) % 3)
rows = data.process_rows(mesh, 8)
batch = next(data.epoch_batches(ds, batch_size=8, seed=3, epoch=1, start_batch=1, rows=rows))
ids = data.shard_batch(batch, mesh)["id"]
full = jax.jit(lambda x: x, out_shardings=NamedSharding(mesh, P()))(ids)
print(json.dumps({"rows": rows.tolist(), "ids": np.asarray(full).tolist()}))
"""


def test_interleaved_mesh_assembles_the_single_process_global_batch():
  from drojax import data

  port = _free_port()
  with _processes() as procs:
    for i in (0, 1):
      procs.append(subprocess.Popen(
          [sys.executable, "-c", _INTERLEAVED, str(i)], cwd=ROOT, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True, env=_env(2, ADDRESS=f"127.0.0.1:{port}")))
    outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert [g["rows"] for g in got] == [[0, 1, 4, 5], [2, 3, 6, 7]]
  ds = data.ArrayDataset.create(np.zeros((24, 2, 2, 1), np.uint8), np.arange(24) % 3)
  expected = next(data.epoch_batches(ds, batch_size=8, seed=3, epoch=1, start_batch=1))["id"]
  assert got[0]["ids"] == got[1]["ids"] == expected.tolist()


def test_distributed_start_up_variables_are_checked_before_jax_is_asked():
  from experiments import cli

  assert cli.maybe_initialize_distributed({}) is False
  assert cli.maybe_initialize_distributed({"DROJAX_DISTRIBUTED": "0"}) is False
  for env, name in (({"DROJAX_DISTRIBUTED": "yes"}, "DROJAX_DISTRIBUTED"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_NUM_PROCESSES": "two"},
                     "DROJAX_NUM_PROCESSES"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_NUM_PROCESSES": "0"},
                     "DROJAX_NUM_PROCESSES"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_PROCESS_ID": "-1"}, "DROJAX_PROCESS_ID"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_DISTRIBUTED_TIMEOUT": "1.5"},
                     "DROJAX_DISTRIBUTED_TIMEOUT")):
    with pytest.raises(cli.UsageError, match=name):
      cli.maybe_initialize_distributed(env)


def test_runner_loads_waterbirds_through_the_registry_at_the_config_size(tmp_path):
  import ml_collections
  from PIL import Image

  from drojax.data import load_dataset
  from experiments import train as xtrain

  Image.new("RGB", (40, 30), (255, 0, 9)).save(tmp_path / "a.png")
  (tmp_path / "metadata.csv").write_text(
      "img_filename,y,split,place\na.png,1,0,0\na.png,0,2,1\n")
  config = ml_collections.ConfigDict({"dataset": "waterbirds", "image_size": 12,
                                      "train_subset": 0, "seed": 0,
                                      "eval": {"images": 0}})
  train, test = xtrain.load_data(config, data_dir=str(tmp_path), download=False)
  assert train.images.shape == (1, 12, 12, 3) and test.images.shape == (1, 12, 12, 3)
  assert train.groups.tolist() == [2] and test.groups.tolist() == [1]
  with pytest.raises(ValueError, match="image_size applies to waterbirds only"):
    load_dataset("digits", "train", image_size=16)
