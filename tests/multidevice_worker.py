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


def main(names):
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  n, b = 32, 16
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  batches = [{"image": images[i * b:(i + 1) * b], "label": labels[i * b:(i + 1) * b],
              "id": np.arange(i * b, (i + 1) * b, dtype=np.int32)} for i in (0, 0, 0)]
  # The same ids three times: the third step's Var-DRO weights use non-zero tracked variances.
  model = models.TinyNet(num_classes=3, width=4)
  config = methods.MethodConfig(rho=0.5, q=2.0, var_dro_eps_max=1.0)
  for spec in names:  # a method name, or name:penalty_mode
    name, _, mode = spec.partition(":")
    method = methods.get_method(
        name, dataclasses.replace(config, penalty_mode=mode) if mode else config)
    opt = train.make_optimizer(10, learning_rate=0.1)
    results = []
    for num_devices in (1, 8):
      mesh = train.make_mesh(num_devices)
      state = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3), method=method,
                                       num_examples=n)
      step = train.make_train_step(method, model, mesh, optimizer=opt)
      metrics = []
      for batch in batches:
        state, m = step(state, data.shard_batch(batch, mesh))
        metrics.append(m)
      results.append(jax.device_get((state, metrics)))
      if num_devices == 8:
        bad = dict(batches[0], **{k: v[:12] for k, v in batches[0].items()})
        try:
          step(state, bad)
          divisible_error = ""
        except ValueError as e:
          divisible_error = str(e)
    diffs = jax.tree.map(lambda a, c: float(np.max(np.abs(np.asarray(a, np.float64) -
                                                          np.asarray(c, np.float64)))),
                         results[0], results[1])
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(results[0][0].params))
    print(json.dumps({"method": spec, "max_diff": max(jax.tree.leaves(diffs)),
                      "param_scale": scale, "steps": int(results[1][0].step),
                      "loss": float(results[0][1][-1]["loss"]),
                      "mean_loss": float(results[0][1][-1]["mean_loss"]),
                      "divisible_error": divisible_error}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
