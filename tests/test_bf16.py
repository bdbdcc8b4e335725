"""bfloat16 compute: loss and gradients close to the float32 model; state stays float32.

The reference is the same model computed in float32 (``dtype=jnp.float32``) on the same
parameters and inputs. ``dtype=jnp.bfloat16`` runs convolutions, BatchNorm and dense layers in
bfloat16 (8 bits of mantissa, relative rounding ~4e-3) while parameters, their gradients and the
optimizer state stay float32 and the logits are returned in float32.

Tolerances were measured on CPU over 4 seeds (8 images of 16x16, freshly initialized models,
BatchNorm in train mode, which amplifies rounding on such a small batch):

=================  =========================  ==========================  =====================
model / objective  max relative loss error    max relative grad L2 error  min gradient cosine
=================  =========================  ==========================  =====================
tiny, erm          6.8e-4                     0.14                        0.990
tiny, dro (exact)  2.9e-3                     0.11                        0.994
preact w=4, erm    1.1e-3                     0.23                        0.974
preact w=4, dro    2.4e-2                     0.27                        0.962
=================  =========================  ==========================  =====================

The thresholds below leave about 2x margin on those figures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import data
from drojax import losses
from drojax import methods
from drojax import models
from drojax import train
from drojax import wdro

NUM_CLASSES = 10


def _data(seed):
  x = jax.random.uniform(jax.random.key(seed), (8, 16, 16, 3), jnp.float32)
  y = jax.random.randint(jax.random.key(seed + 100), (8,), 0, NUM_CLASSES)
  return x, y


def _flat(tree):
  return np.concatenate([np.asarray(t, np.float64).ravel() for t in jax.tree_util.tree_leaves(tree)])


def _loss_and_grads(model, variables, x, y, *, dro: bool):
  """Objective and its parameter gradient (BatchNorm in train mode, as in training)."""

  def objective(params):
    def loss_fn(xx):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, xx,
                              train=True, mutable=["batch_stats"])
      assert logits.dtype == jnp.float32
      return losses.cross_entropy(logits, y)

    if dro:
      return wdro.wdro_total(None, loss_fn, x, rho=1.0, q=1.0, penalty_mode="exact")[0]
    return jnp.mean(loss_fn(x))

  return jax.jit(jax.value_and_grad(objective))(variables["params"])


@pytest.mark.parametrize("name, width, dro, loss_tol, grad_rel_tol, min_cos", [
    ("tiny", 4, False, 2e-3, 0.3, 0.98),
    ("tiny", 4, True, 6e-3, 0.3, 0.98),
    ("preact_resnet18", 4, False, 3e-3, 0.45, 0.95),
])
def test_bf16_loss_and_gradients_close_to_float32(name, width, dro, loss_tol, grad_rel_tol,
                                                  min_cos):
  x, y = _data(0)
  m32 = models.get_model(name, num_classes=NUM_CLASSES, width=width, dtype=jnp.float32)
  m16 = models.get_model(name, num_classes=NUM_CLASSES, width=width, dtype=jnp.bfloat16)
  variables = m32.init(jax.random.key(1), x, train=False)
  # The bfloat16 model has the same parameters, in float32.
  variables16 = m16.init(jax.random.key(1), x, train=False)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(variables16)):
    assert b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)

  l32, g32 = _loss_and_grads(m32, variables, x, y, dro=dro)
  l16, g16 = _loss_and_grads(m16, variables, x, y, dro=dro)
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(g16))
  a, b = _flat(g32), _flat(g16)
  assert np.all(np.isfinite(b)) and np.isfinite(float(l16))
  # bfloat16 was really used: the result differs from float32 ...
  assert float(l16) != float(l32)
  # ... but only by rounding.
  assert abs(float(l16) - float(l32)) <= loss_tol * abs(float(l32))
  assert np.linalg.norm(a - b) <= grad_rel_tol * np.linalg.norm(a)
  assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= min_cos


def test_bf16_train_step_keeps_float32_state_and_tracks_float32_step():
  """One SGD step of a bfloat16 model: params/optimizer state stay float32, close to float32."""
  x, y = _data(3)
  batch = {"image": np.asarray(jnp.round(x * 255), np.uint8), "label": np.asarray(y, np.int32),
           "id": np.arange(8, dtype=np.int32)}
  method = methods.get_method("erm")
  mesh = train.make_mesh(1)
  optimizer = train.make_optimizer(10)
  results = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = models.get_model("tiny", num_classes=NUM_CLASSES, width=4, dtype=dtype)
    state = train.create_train_state(jax.random.key(0), model, optimizer, (16, 16, 3), mesh=mesh)
    step = train.make_train_step(method, model, mesh, optimizer=optimizer, crop_flip=False)
    state, metrics = step(state, data.shard_batch(batch, mesh))
    state, metrics = step(state, data.shard_batch(batch, mesh))
    for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state, state.batch_stats)):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32, leaf.dtype
    results[dtype] = (float(metrics["loss"]), _flat(state.params))
  (l32, p32), (l16, p16) = results[jnp.float32], results[jnp.bfloat16]
  assert np.isfinite(l16)
  assert abs(l16 - l32) <= 5e-3 * abs(l32)
  # Parameters after two steps: the update direction matches to bfloat16 rounding.
  p0 = _flat(train.create_train_state(
      jax.random.key(0), models.get_model("tiny", num_classes=NUM_CLASSES, width=4), optimizer,
      (16, 16, 3)).params)
  d32, d16 = p32 - p0, p16 - p0
  assert d32 @ d16 / (np.linalg.norm(d32) * np.linalg.norm(d16)) >= 0.98
