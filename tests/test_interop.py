"""drojax's pure core with models written in Flax NNX and in Equinox.

The W-DRO objective (``drojax.wdro.wdro_total``) and the attacks take a ``logits_fn``, so any
framework's model works once its parameters are a pytree. A linear classifier makes the
reference closed-form: with logits ``z = x W + b`` the cross-entropy's input gradient is
``W (softmax(z) - onehot(y))``, transcribed below in float64 NumPy.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from drojax import attacks, losses, wdro

B, H, W, C, K = 6, 4, 4, 3, 5
D = H * W * C
RHO = 0.7


def _data():
  rng = np.random.default_rng(0)
  x = rng.uniform(0.2, 0.8, (B, H, W, C)).astype(np.float32)
  y = rng.integers(0, K, B).astype(np.int32)
  return x, y


def _ref(wt, b, x, y):
  """float64: per-example CE, input gradients [B, D] and the W-DRO objective (q=1, norm 2)."""
  x64 = x.reshape(B, -1).astype(np.float64)
  z = x64 @ wt + b
  z = z - z.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  onehot = np.eye(K)[y]
  ce = -np.log(p[np.arange(B), y])
  g = (p - onehot) @ wt.T
  return ce, g, ce.mean() + RHO * np.linalg.norm(g, axis=1).mean()


def _nnx():
  from flax import nnx

  class Linear(nnx.Module):

    def __init__(self, rngs):
      self.dense = nnx.Linear(D, K, rngs=rngs)

    def __call__(self, images):
      return self.dense(images.reshape(images.shape[0], -1))

  model = Linear(nnx.Rngs(0))
  # A nonzero bias, so that the reference checks it is used.
  model.dense.bias[...] = jnp.linspace(-0.3, 0.3, K)
  graphdef, params = nnx.split(model, nnx.Param)
  logits_fn = lambda params, images: nnx.merge(graphdef, params)(images)

  def weights(params):
    m = nnx.merge(graphdef, params)
    return np.asarray(m.dense.kernel[...], np.float64), np.asarray(m.dense.bias[...], np.float64)

  return params, logits_fn, weights


def _equinox():
  eqx = pytest.importorskip("equinox")
  model = eqx.nn.Linear(D, K, key=jax.random.key(0))
  model = eqx.tree_at(lambda m: m.bias, model, jnp.linspace(-0.3, 0.3, K))
  params, static = eqx.partition(model, eqx.is_array)
  logits_fn = lambda params, images: jax.vmap(eqx.combine(params, static))(
      images.reshape(images.shape[0], -1))

  def weights(params):
    return np.asarray(params.weight, np.float64).T, np.asarray(params.bias, np.float64)

  return params, logits_fn, weights


@pytest.fixture(scope="module", params=["nnx", "equinox"])
def framework(request):
  return {"nnx": _nnx, "equinox": _equinox}[request.param]()


def _objective(logits_fn, x, y, mode):
  def objective(params):
    loss_fn = lambda images, labels: losses.cross_entropy(logits_fn(params, images), labels)
    total, _ = wdro.wdro_total(None, loss_fn, x, y, rho=RHO, q=1.0, penalty_mode=mode)
    return total
  return objective


def test_wdro_value_and_gradient(framework):
  params, logits_fn, weights = framework
  x, y = _data()
  wt, b = weights(params)
  _, _, ref_total = _ref(wt, b, x, y)
  grads = {}
  for mode in ("exact", "forward_over_reverse"):
    value, grads[mode] = jax.jit(jax.value_and_grad(_objective(logits_fn, x, y, mode)))(params)
    np.testing.assert_allclose(float(value), ref_total, rtol=1e-5)
  # The two penalty modes give the same parameter gradient ...
  for a, b_ in zip(jax.tree_util.tree_leaves(grads["exact"]),
                   jax.tree_util.tree_leaves(grads["forward_over_reverse"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b_), rtol=2e-4, atol=1e-6)
  # ... and it is the derivative of the float64 reference: a central difference along a
  # random direction in (W, b).
  rng = np.random.default_rng(1)
  dw, db = rng.normal(size=wt.shape), rng.normal(size=b.shape)
  h = 1e-5
  fd = (_ref(wt + h * dw, b + h * db, x, y)[2] - _ref(wt - h * dw, b - h * db, x, y)[2]) / (2 * h)
  g_w, g_b = weights(grads["forward_over_reverse"])
  np.testing.assert_allclose(np.sum(g_w * dw) + np.sum(g_b * db), fd, rtol=1e-3)


def test_attacks(framework):
  params, logits_fn, weights = framework
  x, y = _data()
  wt, b = weights(params)
  ce, g, _ = _ref(wt, b, x, y)
  model = lambda images: logits_fn(params, images)
  eps = 4 / 255
  # FGSM, closed form: clip(x + eps * sign(dCE/dx)).
  x_fgsm = np.asarray(attacks.fgsm(model, jnp.asarray(x), jnp.asarray(y), eps=eps))
  expected = np.clip(x.reshape(B, -1) + eps * np.sign(g), 0, 1).reshape(x.shape)
  np.testing.assert_allclose(x_fgsm, expected, atol=1e-6)
  # PGD stays in the eps-ball and [0, 1] and raises every example's loss above the clean one.
  x_pgd = np.asarray(attacks.pgd(jax.random.key(3), model, jnp.asarray(x), jnp.asarray(y),
                                 eps=eps, step_size=eps / 4, num_steps=5, start="none"))
  assert np.all(np.abs(x_pgd - x) <= eps + 1e-6) and x_pgd.min() >= 0 and x_pgd.max() <= 1
  ce_adv, _, _ = _ref(wt, b, x_pgd, y)
  assert np.all(ce_adv > ce)
