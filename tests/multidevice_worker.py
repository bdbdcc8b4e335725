"""Helper for tests/test_train.py (not a test module): N-device steps vs 1-device steps.

Run as ``python tests/multidevice_worker.py METHOD[:PENALTY_MODE] ...``. It forces 8 CPU devices
(before JAX initializes), runs three train steps of each method on a 1-device mesh and on an
8-device mesh from the same initial state and the same global batches, and prints one JSON
line per method with the largest absolute difference of the parameters, BatchNorm statistics,
optimizer state, tracker and metrics. It also checks that a batch not divisible by 8 raises.
"""

import dataclasses
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drojax import data, methods, models, train  # noqa: E402


def run_steps(method, model, batches, num_devices, num_examples):
  """``((state, metrics), step, state)``: the train steps of ``batches`` on ``num_devices``
  from the same initial state (host copies first; the step and the device state to go on)."""
  opt = train.make_optimizer(10, learning_rate=0.1)
  mesh = train.make_mesh(num_devices)
  state = train.create_train_state(jax.random.key(0), model, opt, batches[0]["image"].shape[1:],
                                   method=method, num_examples=num_examples)
  step = train.make_train_step(method, model, mesh, optimizer=opt)
  metrics = []
  for batch in batches:
    state, m = step(state, data.shard_batch(batch, mesh))
    metrics.append(m)
  return jax.device_get((state, metrics)), step, state


def max_abs_diff(a, b) -> float:
  """The largest absolute difference between two pytrees of arrays (float64)."""
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) -
                                                        np.asarray(y, np.float64)))), a, b)
  return max(jax.tree.leaves(diffs))


def main(names):
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  n, b = 32, 16
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  batches = [{"image": images[i * b:(i + 1) * b], "label": labels[i * b:(i + 1) * b],
              "id": np.arange(i * b, (i + 1) * b, dtype=np.int32)} for i in (0, 0, 0)]
  # The same ids three times: from the second step on, Var-DRO's weights use non-zero tracked
  # variances (updated with the step's own losses first).
  model = models.TinyNet(num_classes=3, width=4)
  config = methods.MethodConfig(rho=0.5, q=2.0, var_dro_eps_max=1.0)
  for spec in names:  # a method name, or name:penalty_mode
    name, _, mode = spec.partition(":")
    method = methods.get_method(
        name, dataclasses.replace(config, penalty_mode=mode) if mode else config)
    one, _, _ = run_steps(method, model, batches, 1, n)
    eight, step, state = run_steps(method, model, batches, 8, n)
    bad = dict(batches[0], **{k: v[:12] for k, v in batches[0].items()})
    try:
      step(state, bad)
      divisible_error = ""
    except ValueError as e:
      divisible_error = str(e)
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(one[0].params))
    print(json.dumps({"method": spec, "max_diff": max_abs_diff(one, eight),
                      "param_scale": scale, "steps": int(eight[0].step),
                      "loss": float(one[1][-1]["loss"]),
                      "mean_loss": float(one[1][-1]["mean_loss"]),
                      "divisible_error": divisible_error}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
