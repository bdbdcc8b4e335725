"""Tests for drojax.train: optimizer vs the PyTorch SGD formula, the sharded step vs a manual
update, no recompilation, the Var-DRO tracker, eval, 8 devices vs 1, and real-data training."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import methods, models, train

from _shared_data import SHARED_DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = str(SHARED_DATA / "cifar10_test_lossless_first1000.npz")


def test_learning_rate_schedule_is_warmup_then_cosine():
  lr = train.make_learning_rate(100, learning_rate=0.2, warmup_steps=10, end_learning_rate=0.01)
  for t in (0, 5, 10, 40, 99, 100):
    if t < 10:
      expected = 0.2 * t / 10
    else:
      expected = 0.01 + (0.2 - 0.01) * 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))
    np.testing.assert_allclose(float(lr(t)), expected, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="warmup_steps"):
    train.make_learning_rate(10, warmup_steps=10)
  with pytest.raises(ValueError, match="schedule"):
    train.make_learning_rate(10, schedule="step")


def _torch_sgd(params, grads_seq, lrs, *, momentum, weight_decay):
  """PyTorch's SGD(nesterov=True, weight_decay) update rule in float64."""
  p = params.astype(np.float64)
  buf = None
  for g, lr in zip(grads_seq, lrs):
    d = g + weight_decay * p
    buf = d if buf is None else momentum * buf + d
    p = p - lr * (d + momentum * buf)
  return p


def test_optimizer_matches_pytorch_nesterov_sgd_with_weight_decay():
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=5).astype(np.float32)
  grads = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
  opt = train.make_optimizer(3, learning_rate=0.1, weight_decay=5e-4, end_learning_rate=0.0)
  lr = train.make_learning_rate(3, learning_rate=0.1, end_learning_rate=0.0)
  p, state = jnp.asarray(p0), opt.init(jnp.asarray(p0))
  for g in grads:
    updates, state = opt.update(jnp.asarray(g), state, p)
    p = p + updates
  # optax's first momentum step starts its trace at 0: buf_1 = g_1, as PyTorch's.
  expected = _torch_sgd(p0, grads, [float(lr(t)) for t in range(3)], momentum=0.9,
                        weight_decay=5e-4)
  np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-7)


def _np_adam(p, grads, lrs, *, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
  """PyTorch's Adam with coupled (L2) weight decay, float64."""
  p = np.asarray(p, np.float64).copy()
  m, v = np.zeros_like(p), np.zeros_like(p)
  for t, (g, lr) in enumerate(zip(grads, lrs), 1):
    d = np.asarray(g, np.float64) + weight_decay * p
    m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  return p


def test_adam_optimizer_matches_coupled_weight_decay_adam():
  rng = np.random.default_rng(1)
  p0 = rng.normal(size=5).astype(np.float32)
  grads = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
  opt = train.make_optimizer(4, algorithm="adam", learning_rate=1e-2, weight_decay=0.1,
                             warmup_steps=1, end_learning_rate=0.0)
  lr = train.make_learning_rate(4, learning_rate=1e-2, warmup_steps=1, end_learning_rate=0.0)
  p, state = jnp.asarray(p0), opt.init(jnp.asarray(p0))
  for g in grads:
    updates, state = opt.update(jnp.asarray(g), state, p)
    p = p + updates
  expected = _np_adam(p0, grads, [float(lr(t)) for t in range(3)], weight_decay=0.1)
  np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="algorithm must be 'sgd' or 'adam', got 'adamw'"):
    train.make_optimizer(4, algorithm="adamw")


def _batch(seed, b=8, hw=8, n=32):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (b, hw, hw, 3), dtype=np.uint8),
          "label": rng.integers(0, 3, b).astype(np.int32),
          "id": rng.choice(n, b, replace=False).astype(np.int32)}


def test_erm_step_equals_a_manual_update_and_does_not_retrace():
  model = models.TinyNet(num_classes=3, width=4)
  opt = train.make_optimizer(10, learning_rate=0.1)
  mesh = train.make_mesh(1)
  traces = []
  erm = methods.get_method("erm")

  def counting_apply(*args):
    traces.append(1)
    return erm.objective.apply(*args)

  method = dataclasses.replace(erm, objective=erm.objective._replace(apply=counting_apply))
  state = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3))
  start = jax.device_get(state)
  # An equal model and shape reuse the compiled init; an unhashable module compiles its own.
  compiled = train._init_variables._cache_size()  # pylint: disable=protected-access
  again = train.create_train_state(jax.random.key(0), models.TinyNet(num_classes=3, width=4),
                                   opt, [8, 8, 3])
  assert train._init_variables._cache_size() == compiled  # pylint: disable=protected-access
  listed = train.create_train_state(jax.random.key(0), models.TinyNet(
      num_classes=3, width=4, mean=[0.5] * 3, std=[0.25] * 3), opt, (8, 8, 3))
  for a, b, c in zip(jax.tree.leaves(start), jax.tree.leaves(again), jax.tree.leaves(listed)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # the init does not depend on mean/std
  step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False)
  batch = _batch(0)
  state, metrics = step(state, batch)

  # Independent computation: plain grad of the mean cross-entropy, PyTorch's SGD rule.
  x = jnp.asarray(batch["image"], jnp.float32) / 255.0
  def loss(params):
    logits, upd = model.apply({"params": params, "batch_stats": start.batch_stats}, x,
                              train=True, mutable=["batch_stats"])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(8), batch["label"]]), (upd, logits)
  (value, (upd, logits)), grads = jax.value_and_grad(loss, has_aux=True)(start.params)
  expected = jax.tree.map(
      lambda p, g: _torch_sgd(np.asarray(p), [np.asarray(g)], [0.1], momentum=0.9,
                              weight_decay=5e-4), start.params, grads)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-6),
               state.params, expected)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6),
               state.batch_stats, upd["batch_stats"])
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"],
                             np.mean(np.argmax(logits, -1) == batch["label"]))
  assert int(state.step) == 1
  for seed in (1, 2):  # new values, same shapes: no new trace
    state, metrics = step(state, _batch(seed))
  assert len(traces) == 1 and int(state.step) == 3
  with pytest.raises(ValueError, match="missing 'id'"):
    step(state, {"image": batch["image"], "label": batch["label"]})


def test_var_dro_step_tracks_losses_by_id_and_eval_counts():
  model = models.TinyNet(num_classes=3, width=4)
  opt = train.make_optimizer(10)
  mesh = train.make_mesh(1)
  method = methods.get_method("var_dro")
  with pytest.raises(ValueError, match="num_examples"):
    train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3), method=method)
  state = train.create_train_state(jax.random.key(1), model, opt, (8, 8, 3), method=method,
                                   num_examples=32)
  start = jax.device_get(state)
  batch = _batch(3)
  step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False)
  state, metrics = step(state, batch)
  x = jnp.asarray(batch["image"], jnp.float32) / 255.0
  logits, _ = model.apply({"params": start.params, "batch_stats": start.batch_stats}, x,
                          train=True, mutable=["batch_stats"])
  logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
  ce = -logp[np.arange(8), batch["label"]]
  count = np.zeros(32, int)
  count[batch["id"]] = 1
  np.testing.assert_array_equal(state.objective_state.count, count)
  np.testing.assert_allclose(np.asarray(state.objective_state.mean)[batch["id"]], ce, rtol=1e-5)
  # All variances were 0 at the first sighting: uniform weights, i.e. the mean loss.
  np.testing.assert_allclose(metrics["loss"], ce.mean(), rtol=1e-5)

  evaluate = train.make_eval_step(model, mesh)
  mask = np.array([1, 1, 1, 0, 1, 1, 0, 1], bool)
  out = evaluate(state, dict(batch, mask=mask))
  ref = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
  np.testing.assert_allclose(out["logits"], ref, rtol=1e-5, atol=1e-6)
  correct = (np.argmax(ref, -1) == batch["label"]) & mask
  assert float(out["correct"]) == correct.sum() and float(out["count"]) == mask.sum()


@pytest.mark.slow
def test_eight_devices_equal_one_device():
  """Three steps of dro (finite-difference mode) and var_dro on 8 forced CPU devices vs 1 device
  (a subprocess, so the rest of the suite keeps one device); the shared-backward custom_vjp runs
  inside shard_map on 8 devices. The other methods' 1- and 8-device parameters are compared with
  a recording in tests/test_method_numerics.py."""
  specs = ["dro:finite_difference", "var_dro"]
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice_worker.py"),
                        *specs], capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert [r["method"] for r in rows] == specs
  for r in rows:
    assert r["steps"] == 3 and math.isfinite(r["loss"])
    assert r["max_diff"] < 2e-5 * max(1.0, r["param_scale"]), r
    assert "not divisible by the number of devices 8" in r["divisible_error"], r
  # Non-uniform weights from the second step (the tracker is updated before the weights, so
  # the repeated examples already have a variance): weighted loss > mean loss at the last step.
  var_dro = rows[-1]
  assert var_dro["loss"] > var_dro["mean_loss"] + 1e-4, var_dro


@pytest.mark.slow
def test_every_method_reduces_the_loss_on_real_images():
  if not os.path.exists(CIFAR):
    pytest.skip(f"{CIFAR} not found")
  with np.load(CIFAR, allow_pickle=False) as f:
    images, labels = f["images"][:16], f["labels"][:16].astype(np.int32)
  batch = {"image": images[:, ::2, ::2], "label": labels,
           "id": np.arange(16, dtype=np.int32)}
  model = models.TinyNet(num_classes=10, width=8)
  mesh = train.make_mesh(1)
  config = methods.MethodConfig(rho=0.1, q=1.0, var_dro_eps_max=0.5, kl_temperature=1.0,
                                cvar_alpha=0.5)
  for name in ("erm", "dro", "var_dro", "kl_dro", "cvar"):
    method = methods.get_method(name, config)
    opt = train.make_optimizer(20, learning_rate=0.05, schedule="constant")
    state = train.create_train_state(jax.random.key(0), model, opt, (16, 16, 3), method=method,
                                     num_examples=16)
    step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False)
    losses = []
    for _ in range(12):
      state, metrics = step(state, batch)
      losses.append(float(metrics["mean_loss"]))
    assert losses[-1] < 0.7 * losses[0], (name, losses)


def _cos(a, b):
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def _one_step_per_penalty_mode(method_name, modes, *, batch_seed):
  """One train step of ``method_name`` (rho 0.5) per penalty mode from one TinyNet state.

  Returns ``(model, start, batch, updates, metrics)``: ``updates[mode]`` is the flat float64
  parameter change of that step, ``metrics[mode]`` its metrics.
  """
  model = models.TinyNet(num_classes=3, width=4)
  opt = train.make_optimizer(10, learning_rate=0.1)
  mesh = train.make_mesh(1)
  start = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3))
  batch = _batch(batch_seed)
  updates, metrics = {}, {}
  for mode in modes:
    method = methods.get_method(method_name, methods.MethodConfig(rho=0.5, penalty_mode=mode))
    step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False,
                                 donate=False)
    state, metrics[mode] = step(start, batch)
    updates[mode] = np.concatenate([np.asarray(a - b, np.float64).ravel() for a, b in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(start.params))])
  return model, start, batch, updates, metrics


def test_penalty_modes_in_the_train_step():
  # On a one-device mesh the cheaper modes run as a custom_vjp inside shard_map (subsampling
  # is covered in test_wdro, several devices in test_eight_devices_equal_one_device). One
  # step of forward_over_reverse must move the parameters as the exact grad of grad does; one
  # step of finite_difference as the surrogate form of the same estimate, built here by hand
  # (on this ReLU net the estimate itself is far from exact: kinks, see wdro.wdro_total).
  model, start, batch, updates, metrics = _one_step_per_penalty_mode(
      "dro", ("exact", "forward_over_reverse", "finite_difference"), batch_seed=3)
  assert _cos(updates["forward_over_reverse"], updates["exact"]) > 0.99999
  for mode in ("forward_over_reverse", "finite_difference"):
    for name in ("loss", "penalty", "mean_loss"):
      np.testing.assert_allclose(metrics[mode][name], metrics["exact"][name], rtol=1e-5)
  x = jnp.asarray(batch["image"], jnp.float32) / 255.0
  y = jax.nn.one_hot(batch["label"], 3)

  def surrogate_objective(params):
    def losses_fn(xx):
      logits, _ = model.apply({"params": params, "batch_stats": start.batch_stats}, xx,
                              train=True, mutable=["batch_stats"])
      return -jnp.sum(y * jax.nn.log_softmax(logits), -1)
    from drojax import _wdro_modes, wdro  # pylint: disable=import-outside-toplevel
    losses, vjp_fn = jax.vjp(losses_fn, x)
    (g,) = vjp_fn(jnp.ones_like(losses))
    _, term = _wdro_modes.finite_difference_surrogate(
        losses_fn, x, (), losses, g, q=1.0, p=2.0, has_aux=False, axis_name=None,
        fd_step=wdro.DEFAULT_FD_STEP)
    return jnp.mean(losses) + 0.5 * term

  grads = jax.grad(surrogate_objective)(start.params)
  expected = np.concatenate([
      _torch_sgd(np.asarray(p), [np.asarray(g)], [0.1], momentum=0.9, weight_decay=5e-4).ravel()
      - np.asarray(p, np.float64).ravel()
      for p, g in zip(jax.tree.leaves(start.params), jax.tree.leaves(grads))])
  assert _cos(updates["finite_difference"], expected) > 0.9999


def test_forward_over_reverse_equals_exact_for_dro_augmix():
  # Three views and the JSD term through the shared-backward custom_vjp.
  _, _, _, updates, metrics = _one_step_per_penalty_mode(
      "dro_augmix", ("exact", "forward_over_reverse"), batch_seed=4)
  assert _cos(updates["forward_over_reverse"], updates["exact"]) > 0.99999
  np.testing.assert_allclose(metrics["forward_over_reverse"]["penalty"],
                             metrics["exact"]["penalty"], rtol=1e-5)
  np.testing.assert_allclose(metrics["forward_over_reverse"]["loss"], metrics["exact"]["loss"],
                             rtol=1e-5)


def test_train_step_and_loop_never_mention_a_method_or_its_fields():
  """The step and the loop are method-agnostic: no method or objective name, no method-specific
  config field or state (the Var-DRO tracker) appears as a name, an attribute or a string."""
  import ast
  forbidden = set(methods.method_names()) | set(methods.OBJECTIVES) | {
      "tracker", "uses_tracker", "tracker_ema", "TrackerState", "weighting"}
  forbidden |= set(methods.field_defaults()) - {"q", "norm"}
  for path in ("drojax/train.py", "drojax/loop.py"):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    words = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Name):
        words.add(node.id)
      elif isinstance(node, ast.Attribute):
        words.add(node.attr)
      elif isinstance(node, (ast.alias,)):
        words.update(node.name.split("."))
      elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        words.update(w.strip("`'\".,:;()[]{}") for w in node.value.split())
      elif isinstance(node, ast.keyword) and node.arg:
        words.add(node.arg)
    hits = sorted(words & forbidden)
    assert not hits, f"{path} mentions {hits}"


def test_adversarial_methods_train_in_the_sharded_step():
  """pgd_at, trades and mart run inside the same sharded step: finite metrics, parameters move,
  the state stays stateless (their objective state is None) and a second step does not retrace."""
  model = models.TinyNet(num_classes=3, width=4)
  mesh = train.make_mesh(1)
  config = methods.MethodConfig(adv_steps=2, adv_eps=0.1, adv_step_size=0.05)
  for name in ("pgd_at", "trades", "mart"):
    method = methods.get_method(name, config)
    opt = train.make_optimizer(10, learning_rate=0.1)
    state = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3), method=method)
    start = jax.device_get(state.params)
    step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False)
    state, metrics = step(state, _batch(5))
    state, metrics = step(state, _batch(6))
    assert state.objective_state is None and int(state.step) == 2
    assert all(np.isfinite(float(v)) for v in metrics.values()), (name, metrics)
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(start)))
    assert moved > 1e-4, name
    assert step.jitted._cache_size() == 1, name  # pylint: disable=protected-access
