"""Helper for tests/test_group_objectives.py (not a test module): group objectives, 8 devices
vs 1.

Forces 8 CPU devices (before JAX initializes), runs three train steps of each group objective
on a 1-device and an 8-device mesh from the same state and global batches (2 examples per
device, so most devices miss most groups), and prints one JSON line per objective with the
largest absolute difference of the parameters, optimizer state, objective state and metrics.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drojax import methods, models, objectives, views  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multidevice_worker import max_abs_diff, run_steps  # noqa: E402


def _objectives(n):
  weights = np.ones(n, np.float32)
  weights[::3] = 5.0
  return {
      "group_dro": objectives.group_dro(num_groups=4, step_size=2.0,
                                        adjustments=np.array([0.1, 0.2, 0.3, 0.4])),
      "vrex": objectives.vrex(num_environments=3, penalty_weight=10.0, anneal_steps=1),
      "irm": objectives.irm(num_environments=3, penalty_weight=10.0, anneal_steps=1),
      "var_dro_vrex": objectives.var_dro_vrex(num_environments=3, penalty_weight=10.0,
                                              eps_max=1.0),
      "weighted_erm": objectives.weighted_erm(weights),
  }


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  n, b = 32, 16
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  groups = rng.choice(4, n, p=[0.6, 0.25, 0.1, 0.05]).astype(np.int32)
  envs = rng.choice(3, n, p=[0.5, 0.4, 0.1]).astype(np.int32)
  batches = [{"image": images[i * b:(i + 1) * b], "label": labels[i * b:(i + 1) * b],
              "id": np.arange(i * b, (i + 1) * b, dtype=np.int32),
              "group": groups[i * b:(i + 1) * b], "environment": envs[i * b:(i + 1) * b]}
             for i in (0, 1, 0)]
  model = models.TinyNet(num_classes=3, width=4)
  config = methods.MethodConfig()
  for name, objective in _objectives(n).items():
    method = methods.Method(name, views.plain_augment(config), views.cross_entropy_criterion,
                            objective)
    one, _, _ = run_steps(method, model, batches, 1, n)
    eight, _, _ = run_steps(method, model, batches, 8, n)
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(one[0].params))
    last, q = one[1][-1], one[0].objective_state
    moved = (float(last.get("penalty", 0.0)) > 1e-6 if "penalty" in last else
             name == "weighted_erm" or float(np.max(np.abs(np.asarray(q.q) - 0.25))) > 1e-4)
    print(json.dumps({"method": name, "max_diff": max_abs_diff(one, eight),
                      "param_scale": scale, "penalty_or_q_moved": bool(moved)}), flush=True)


if __name__ == "__main__":
  main()
