"""Several processes for real: 2 processes x 2 CPU devices on localhost against 1 process x 4.

Every run goes through the CLI (``python -m experiments.fashion_mnist_pgd --methods=erm,dro,
var_dro``, which trains and evaluates each method in turn with
``experiments.train.train_and_evaluate``), with
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
    "--config.eval.images=32", "--config.eval.batch_size=8",
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
  # 4 evaluation batches: process 0 takes batches 0 and 2, process 1 batches 1 and 3.
  assert one["eval_images_per_process"] == [32] and two["eval_images_per_process"] == [16, 16]
  for key in ("clean_accuracy", "mean_corruption_accuracy", "corruption_accuracy",
              "adversarial_accuracy"):
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
    # Process 1 loses its coordinator and says so in one line; a scheduler restarts the whole
    # job, as we do here.
    _check_survivor(pair[1], logs[1], stopped=0, workdir=workdir)
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


def _check_survivor(proc, log, *, stopped, workdir):
  """``proc`` ends with status 1 within 60 s, its output naming the stopped process and the
  last checkpoint in one line, with no Python or C++ traceback."""
  t0 = time.monotonic()
  try:
    rc = proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    rc = "still running after 60 s"
  seconds = time.monotonic() - t0
  text = log.read_text()
  step = max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  line = (f"fashion_mnist_pgd.py: error: process {stopped} stopped; the workdir keeps checkpoint "
          f"{step}; restart all processes with the same command")
  assert rc == 1 and text.splitlines()[-1] == line, (rc, text[-3000:])
  for noise in ("Traceback", "Check failure", "coordination_service", "Terminating process"):
    assert noise not in text, text[-3000:]
  print(f"process {stopped} SIGKILLed: the survivor reported it after {seconds:.1f} s")


def _check_sigkill_of_process_1(runs):
  """The survivor is process 0, which hosts JAX's coordination service: it learns of the death
  through the service's heartbeat timeout."""
  root = runs["base"] / "killed1"
  logs = [runs["base"] / "killed1_p0.log", runs["base"] / "killed1_p1.log"]
  ckpts = root / "erm" / "checkpoints"
  with _processes() as procs:
    pair = _start_pair(procs, root, "erm", logs, ["--config.checkpoint_every_steps=1"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (ckpts.is_dir() and any(d.isdigit() for d in os.listdir(ckpts))):
      assert time.monotonic() < deadline, "no checkpoint appeared"
      assert pair[0].poll() is None and pair[1].poll() is None, logs[0].read_text()[-3000:]
      time.sleep(0.01)
    pair[1].send_signal(signal.SIGKILL)
    _check_survivor(pair[0], logs[0], stopped=1, workdir=root / "erm")


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly_after_sigkill(tmp_path):
  # One test, not a module fixture shared by several: under pytest-xdist each worker would
  # start the runs again.
  t0 = time.monotonic()
  runs = _two_and_one(tmp_path)
  for method in METHODS:
    _check_method(runs, method)
  _check_sigkill_of_process_0_then_restart(runs)
  _check_sigkill_of_process_1(runs)
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
  from experiments import cli, launch

  assert launch.maybe_initialize_distributed({}) is False
  assert launch.maybe_initialize_distributed({"DROJAX_DISTRIBUTED": "0"}) is False
  for env, name in (({"DROJAX_DISTRIBUTED": "yes"}, "DROJAX_DISTRIBUTED"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_NUM_PROCESSES": "two"},
                     "DROJAX_NUM_PROCESSES"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_NUM_PROCESSES": "0"},
                     "DROJAX_NUM_PROCESSES"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_PROCESS_ID": "-1"}, "DROJAX_PROCESS_ID"),
                    ({"DROJAX_DISTRIBUTED": "1", "DROJAX_DISTRIBUTED_TIMEOUT": "1.5"},
                     "DROJAX_DISTRIBUTED_TIMEOUT")):
    with pytest.raises(cli.UsageError, match=name):
      launch.maybe_initialize_distributed(env)
  # The library reads the variables (the CLI only maps a ValueError to its one-line exit 2).
  from drojax import distributed

  assert distributed.start_options({"DROJAX_DISTRIBUTED": "true", "DROJAX_NUM_PROCESSES": "2",
                                    "DROJAX_PROCESS_ID": "0"}) == {
                                        "num_processes": 2, "process_id": 0, "timeout": 300}
  assert distributed.start_options({"DROJAX_DISTRIBUTED": "1",
                                    "DROJAX_DISTRIBUTED_TIMEOUT": "7"}) == {"timeout": 7}
  with pytest.raises(ValueError, match=r"DROJAX_PROCESS_ID must be an integer >= 0, got '-1'"):
    distributed.start_options({"DROJAX_DISTRIBUTED": "1", "DROJAX_PROCESS_ID": "-1"})


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


# --------------------------------------------------- start-up agreement and peer failure


def test_disagreements_are_named_field_by_field():
  from drojax.distributed import _differences, config_hash

  def rec(config=None, token="t", devices=2, workdir="/w"):
    config = config or {"lr": 0.1, "eval": {"images": 32}}
    return {"hash": config_hash(config), "config": config, "token": token, "devices": devices,
            "workdir": workdir}

  assert _differences([rec(), rec(), rec()]) == []
  [line] = _differences([rec(), rec({"lr": 0.1, "eval": {"images": 64}})])
  assert line == "config field eval.images is 32 on process 0 and 64 on process 1"
  [line] = _differences([rec(), rec(token=None, workdir="/v")])
  assert line.startswith("workdir: process 1 does not see the token process 0 wrote into /w")
  assert "process 1 has --workdir /v" in line
  [line] = _differences([rec(), rec(), rec(devices=1)])
  assert line.startswith("devices: process 0 has 2 and process 2 has 1 local devices")
  # Key order does not change the hash; a value does.
  assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 2})


def test_processes_that_disagree_each_print_one_line_and_exit_2(tmp_path):
  # One pair run for the three kinds: process 1 has another learning rate, another workdir and
  # one device where process 0 has two (today: a traceback 30 s later, a hang, > 150 s silent).
  port = _free_port()
  args = ["--dataset=digits", "--method=erm", "--config.model=tiny", "--config.batch_size=4",
          "--config.progress=false"]
  extra = ([f"--workdir={tmp_path / 'w'}", "--config.learning_rate=0.05"],
           [f"--workdir={tmp_path / 'v'}", "--config.learning_rate=0.1"])
  t0 = time.monotonic()
  with _processes() as procs:
    for i in (0, 1):
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "experiments.cifar_c", *args, *extra[i]], cwd=ROOT,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
          env=_env(2 - i, DROJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   DROJAX_NUM_PROCESSES="2", DROJAX_PROCESS_ID=str(i),
                   DROJAX_DISTRIBUTED_TIMEOUT="120")))
    outs = [p.communicate(timeout=180) for p in procs]
  seconds = time.monotonic() - t0
  for p, (_, err) in zip(procs, outs):
    lines = err.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("cifar_c.py: error: the 2 processes disagree: config field "
                               "learning_rate is 0.05 on process 0 and 0.1 on process 1; "
                               "workdir: process 1 does not see the token"), lines[0]
    assert "devices: process 0 has 2 and process 1 has 1 local devices" in lines[0]
  assert outs[0][1] == outs[1][1]
  assert not (tmp_path / "w" / "config.json").exists() and not (tmp_path / "v").exists()
  print(f"disagreement reported by both processes after {seconds:.0f} s")


_FAKE_CHILD = r"""
import os, sys
from drojax import distributed
distributed.divert_runtime_log()
print("to the terminal", file=sys.stderr, flush=True)
os.write(2, b"E1203 coordination_service_agent.cc:289] Polled an error\n")
how = sys.argv[1]
if how == "leave":
  distributed.leave(2, "the processes disagree: x")
if how in ("peer", "leader"):
  with open(os.path.join(os.environ[distributed.SUPERVISOR_ENV], "workdir"), "w") as f:
    f.write(sys.argv[2])
  os.write(2, b"F1203 client.h:80] Terminating process because the " +
           distributed._FATAL.encode() + b". absl::Status: " +
           (b"UNAVAILABLE: Task 1 heartbeat timeout." if how == "peer" else
            b"UNAVAILABLE: Failed to send RPC to coordination service.") +
           b"\n*** Check failure stack trace: ***\n")
  os.abort()
if how == "crash":
  os.abort()
sys.exit(int(how))
"""


@pytest.mark.parametrize("how", ["peer", "leader", "leave", "crash", "0", "3"])
def test_supervisor_turns_how_the_child_ended_into_one_line(tmp_path, capfd, how):
  from drojax import distributed

  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "4").mkdir(parents=True)
  (workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1").mkdir()
  status = distributed.supervise([sys.executable, "-c", _FAKE_CHILD, how, str(workdir)],
                                 prog="x.py", env=_env(1))
  err = capfd.readouterr().err.splitlines()
  assert err[0] == "to the terminal"  # the child's Python stderr; its fd 2 went to the log
  tail = err[1:]
  expected = {
      "peer": (1, ["x.py: error: process 1 stopped; the workdir keeps checkpoint 4; restart all "
                   "processes with the same command"]),
      "leader": (1, ["x.py: error: process 0 stopped; the workdir keeps checkpoint 4; restart "
                     "all processes with the same command"]),
      "leave": (2, ["x.py: error: the processes disagree: x"]),
      "0": (0, []), "3": (3, [])}
  if how == "crash":
    assert status == 128 + signal.SIGABRT and len(tail) == 1, tail
    assert "ended with signal SIGABRT; the JAX runtime's log is" in tail[0]
    log = tail[0].rsplit(" ", 1)[1]
    assert "Polled an error" in open(log).read()
    import shutil
    shutil.rmtree(os.path.dirname(log))
  else:
    assert (status, tail) == expected[how]


# ----------------------------------------------------------- evaluation across processes

# The whole protocol (clean, generated corruptions, PGD, the suite) of a linear 4-class model on
# 20 images in batches of 4 (5 batches: process 0 takes 3, process 1 takes 2), as one process or
# as one of two (argv: process id, or -1 alone). The labels are the model's own predictions and
# eps the median of the exact L-inf robust radii, so about half the images survive APGD-CE and
# the later attacks run on fewer, regathered batches.
_EVAL_WORKER = r"""
import json, os, sys
import jax, numpy as np
me = int(sys.argv[1])
jax.config.update("jax_compilation_cache_dir", os.environ["CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
if me >= 0:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(os.environ["ADDRESS"], 2, me, initialization_timeout=60)
from drojax import evaluate as ev
rng = np.random.default_rng(0)
w = rng.normal(size=(8 * 8 * 3, 4)).astype(np.float32)
x = rng.uniform(0.3, 0.7, size=(20, 8, 8, 3)).astype(np.float32)
apply_fn = lambda v, x: x.reshape(x.shape[0], -1) @ v
logits = x.reshape(20, -1).astype(np.float64) @ w
y = logits.argmax(1)
gap = logits[np.arange(20), y][:, None] - logits
dist = np.abs(w[:, y].T[:, None, :] - w.T[None]).sum(-1)  # |w_y - w_k|_1, [20, 4]
radius = np.where(np.arange(4)[None] == y[:, None], np.inf, gap / dist).min(1)
eps = float(np.median(radius))
config = ev.EvalConfig(corruption_names=["contrast", "gaussian_noise"], severities=[1, 3],
                       eps=[eps], attack="suite", num_steps=3, num_queries=8, batch_size=4)
share = ev.Share(max(me, 0), 2 if me >= 0 else 1)
r = ev.evaluate(ev.BoundModel(apply_fn, w), x, y, config=config, progress=False, share=share)
pgd = ev.EvalConfig(corruptions=None, eps=[eps], num_steps=2, batch_size=4)
r["pgd"] = ev.evaluate(ev.BoundModel(apply_fn, w), x, y, config=pgd, progress=False,
                       share=share)["adversarial_accuracy"]
r["devices"] = jax.local_device_count()
print(json.dumps(r, sort_keys=True))
"""


@pytest.mark.slow
def test_evaluation_across_processes_equals_one_process(tmp_path):
  def start(procs, arg, devices, **env):
    procs.append(subprocess.Popen(
        [sys.executable, "-c", _EVAL_WORKER, str(arg)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=_env(devices, **env)))

  def results(procs):
    outs = [p.communicate(timeout=RUN_TIMEOUT_S) for p in procs]
    for p, (_, err) in zip(procs, outs):
      assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

  t0 = time.monotonic()
  cache = str(tmp_path / "jax_cache")  # the pairs reuse the reference's compiled programs
  with _processes() as procs:
    start(procs, -1, 1, CACHE=cache)
    [one] = results(procs)
  runs = {}
  for devices in (1, 2):
    address = f"127.0.0.1:{_free_port()}"
    with _processes() as procs:
      for i in (0, 1):
        start(procs, i, devices, ADDRESS=address, CACHE=cache)
      runs[devices] = results(procs)
  (tmp_path / "results.json").write_text(json.dumps({"one": one, "pairs": runs}))
  assert one["eval_images_per_process"] == [20]
  [robust] = one["adversarial_accuracy"].values()
  assert 0 < robust < 1, robust  # some images survive the suite, some do not
  for devices, pair in runs.items():
    for r in pair:
      assert r["devices"] == devices
      assert r["eval_images_per_process"] == [12, 8]
      for key in ("clean_accuracy", "corruption_accuracy", "adversarial_by_attack", "pgd"):
        assert r[key] == one[key], (devices, key, r[key], one[key])
  print(f"2 x 1 and 2 x 2 evaluations equal the one-process one "
        f"({one['adversarial_by_attack']}); {time.monotonic() - t0:.0f} s")


def test_a_share_is_every_count_th_batch_and_checked():
  from drojax.evaluate import Share

  assert [list(Share(i, 2).mine(5)) for i in (0, 1)] == [[0, 2, 4], [1, 3]]
  assert list(Share().mine(3)) == [0, 1, 2] and list(Share(2, 3).mine(2)) == []
  np.testing.assert_array_equal(Share().total(np.array([[1, 2]])), [[1, 2]])
  for index, count in ((2, 2), (-1, 2), (0, 0), (0.0, 1)):
    with pytest.raises(ValueError, match="0 <= index < count"):
      Share(index, count)
