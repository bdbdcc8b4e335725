"""Helper for tests/test_method_numerics.py (not a test module): parameters after 3 train steps.

Run as ``python tests/method_numerics_worker.py OUT.npz [SPEC ...]`` (SPEC = ``method`` or
``method:penalty_mode``; default: every spec in ``SPECS``). It forces 8 CPU devices (before
JAX initializes) and, for each spec, runs three train steps of a tiny TinyNet from one seed on a
1-device mesh and on an 8-device mesh with the same global batches, and writes the final
parameters and BatchNorm statistics, flattened into one float32 vector per (spec, mesh size),
as ``OUT.npz`` entries ``"<spec>@<devices>"``.

With the same compiled step it also runs the three steps from ``ULP_SEEDS`` copies of the
initial state whose every float32 parameter and BatchNorm statistic is moved by one ulp in a
random direction, written as ``"<spec>@<devices>/ulp<seed>"``: how far float32 rounding alone
moves this computation's result, on this machine, with this XLA. The test's tolerance is a
multiple of it, so it holds on any CPU while any change of the numerics beyond rounding fails.

``tests/data/method_params_before.npz`` holds the ``"<spec>@<devices>"`` entries written by this
script from the code as it was before the method layer became objectives with their own state
(issue 13); the test compares the refactored code against it. The penalty mode is pinned
explicitly for every W-DRO method, so the recording keeps its meaning when ``MethodConfig``'s
default mode changes.
"""

import dataclasses
import os
import sys

# LLVM's optimization level only changes how float32 work is ordered and fused (which the ulp
# runs measure, like any other CPU's code generation); level 0 compiles about a third faster.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drojax import data, methods, models, train  # noqa: E402

# Every method of the table before issue 13; the W-DRO ones with the penalty mode pinned.
SPECS = ("erm", "mixup", "augmix", "noisymix", "kl_dro", "cvar", "var_dro", "var_dro_mixup",
         "var_dro_augmix", "dro:exact", "dro:forward_over_reverse", "dro_mixup:exact",
         "dro_augmix:exact", "dro_noisymix:exact")
DEVICE_COUNTS = (1, 8)
ULP_SEEDS = (1, 2)


def _batches():
  rng = np.random.default_rng(0)
  n, b = 32, 16
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  # Batch 0 twice: the third step is its second visit, whose Var-DRO weights use the variances
  # updated with that step's losses (non-zero; with the pre-update variances of before
  # 2026-12-03 they were still 0 and all three steps had uniform weights).
  return n, [{"image": images[i * b:(i + 1) * b], "label": labels[i * b:(i + 1) * b],
              "id": np.arange(i * b, (i + 1) * b, dtype=np.int32)} for i in (0, 1, 0)]


def fingerprint(state) -> np.ndarray:
  """Parameters and BatchNorm statistics, flattened in tree order, float32."""
  leaves = jax.tree.leaves((state.params, state.batch_stats))
  return np.concatenate([np.asarray(x, np.float32).ravel() for x in leaves])


def one_ulp(tree, seed: int):
  """Every float32 leaf of ``tree`` (host arrays) moved by one ulp up or down at random."""
  rng = np.random.default_rng(seed)

  def move(x):
    x = np.asarray(x)
    if x.dtype != np.float32:
      return x
    return np.nextafter(x, np.where(rng.random(x.shape) < 0.5, -np.inf, np.inf).astype(x.dtype))

  return jax.tree.map(move, tree)


def run(spec: str) -> dict[str, np.ndarray]:
  n, batches = _batches()
  model = models.TinyNet(num_classes=3, width=4)
  config = methods.MethodConfig(rho=0.5, q=2.0, var_dro_eps_max=1.0, kl_temperature=1.0,
                                cvar_alpha=0.5)
  name, _, mode = spec.partition(":")
  if mode:
    config = dataclasses.replace(config, penalty_mode=mode)
  method = methods.get_method(name, config)
  out = {}
  for num_devices in DEVICE_COUNTS:
    mesh = train.make_mesh(num_devices)
    opt = train.make_optimizer(10, learning_rate=0.1)
    state = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3), method=method,
                                     num_examples=n, mesh=mesh)
    shardings = jax.tree.map(lambda a: a.sharding, state)
    initial = jax.device_get(state)  # the step donates its state
    step = train.make_train_step(method, model, mesh, optimizer=opt)
    for seed in (None,) + ULP_SEEDS:
      start = initial if seed is None else initial.replace(
          params=one_ulp(initial.params, seed),
          batch_stats=one_ulp(initial.batch_stats, 100 + seed))
      state = jax.device_put(start, shardings)
      for batch in batches:
        state, _ = step(state, data.shard_batch(batch, mesh))
      key = f"{spec}@{num_devices}" + ("" if seed is None else f"/ulp{seed}")
      out[key] = fingerprint(jax.device_get(state))
  return out


def main(path, specs):
  assert jax.device_count() == 8, jax.devices()
  result = {}
  for spec in specs or SPECS:
    result.update(run(spec))
    print(spec, flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **result)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
