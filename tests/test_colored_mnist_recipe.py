"""experiments/colored_mnist_recipe.py against float64 NumPy transcriptions of the papers'
Colored MNIST recipe: the inputs, the ERM / V-REx / IRMv1 objective with its anneal, the
full-batch Adam steps (on central-difference gradients) and the accuracies."""

import jax
import numpy as np
import pytest

from experiments import colored_mnist_recipe as recipe

# A made-up problem: 12 examples of 5 features, 2 environments, 4 groups; MLP 5-4-4-2.
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(12, 5)).astype(np.float32)
Y = _RNG.integers(0, 2, size=12)
ENV = np.repeat([0, 1], 6)
DIMS = [5, 4, 4, 2]
KW = {"anneal": 1, "weight": 100.0, "l2": 0.01}


def _params():
  return recipe.init_params(jax.random.key(3), DIMS)


def _np_objective(p, step, method):
  """float64: mean environment risk + l2 |W|^2 + lam * penalty, over max(lam, 1)."""
  h = np.maximum(X @ p["w1"] + p["b1"], 0)
  h = np.maximum(h @ p["w2"] + p["b2"], 0)
  z = h @ p["w3"] + p["b3"]
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  ce = -logp[np.arange(len(Y)), Y]
  risks = np.array([ce[ENV == e].mean() for e in (0, 1)])
  if method == "erm":
    penalty = 0.0
  elif method == "vrex":
    penalty = np.mean((risks - risks.mean()) ** 2)
  else:  # d/dw CE(w z, y) at w = 1 is (softmax(z) - onehot(y)) . z; IRMv1 squares its mean.
    resid = np.exp(logp) - np.eye(2)[Y]
    penalty = np.mean([np.mean((resid * z)[ENV == e].sum(1)) ** 2 for e in (0, 1)])
  lam = 1.0 if method == "erm" else (KW["weight"] if step >= KW["anneal"] else 1.0)
  norm = sum(np.sum(p[k] ** 2) for k in ("w1", "w2", "w3"))
  return (risks.mean() + KW["l2"] * norm + lam * penalty) / max(lam, 1.0)


def _np_grad(p, step, method, h=1e-6):
  grad = {}
  for k, v in p.items():
    g = np.zeros_like(v)
    for i in np.ndindex(v.shape):
      up, down = dict(p), dict(p)
      up[k], down[k] = v.copy(), v.copy()
      up[k][i] += h
      down[k][i] -= h
      g[i] = (_np_objective(up, step, method) - _np_objective(down, step, method)) / (2 * h)
    grad[k] = g
  return grad


def _as64(params):
  return {k: np.asarray(v, np.float64) for k, v in params.items()}


@pytest.mark.parametrize("method", recipe.METHODS)
@pytest.mark.parametrize("step", [0, 1])  # before and from the anneal
def test_objective_matches_float64_transcription(method, step):
  params = _params()
  masks = [ENV == e for e in (0, 1)]
  got = recipe.objective(params, X, Y, masks, step, method=method, **KW)
  want = _np_objective(_as64(params), step, method)
  np.testing.assert_allclose(float(got), want, rtol=2e-5)


@pytest.mark.parametrize("method", recipe.METHODS)
def test_train_is_adam_on_the_objective(method):
  """Three full-batch Adam steps (the anneal at step 1) against a float64 Adam transcription
  (b1 0.9, b2 0.999, eps 1e-8, bias-corrected) on central-difference gradients."""
  lr, steps = 0.05, 3
  params = _params()
  got = recipe.train(params, X, Y, ENV, method=method, steps=steps, lr=lr, **KW)
  p = _as64(params)
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(w) for k, w in p.items()}
  for t in range(steps):
    g = _np_grad(p, t, method)
    for k in p:
      m[k] = 0.9 * m[k] + 0.1 * g[k]
      v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
      mhat, vhat = m[k] / (1 - 0.9 ** (t + 1)), v[k] / (1 - 0.999 ** (t + 1))
      p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + 1e-8)
  moved = max(np.abs(p[k] - np.asarray(params[k])).max() for k in p)
  assert moved > lr  # the steps did something the comparison can see
  for k in p:
    np.testing.assert_allclose(np.asarray(got[k]), p[k], atol=1e-4, err_msg=k)


def test_init_params_shapes_and_scale():
  params = recipe.init_params(jax.random.key(0), [300, 200, 100, 2])
  for i, (fan_in, fan_out) in enumerate([(300, 200), (200, 100), (100, 2)]):
    w, b = np.asarray(params[f"w{i + 1}"]), np.asarray(params[f"b{i + 1}"])
    assert w.shape == (fan_in, fan_out) and b.shape == (fan_out,) and not b.any()
    # sample variance of >= 200 normals within 5 standard errors of 2 / (fan_in + fan_out)
    var = 2 / (fan_in + fan_out)
    assert abs(w.var() - var) < 5 * var * np.sqrt(2 / w.size)


def test_accuracies_closed_form():
  # groups 0: 2 of 2 right, 1: 1 of 2, 3: 0 of 1 -> accuracy 3 / 5, worst group 0.
  pred = np.array([1, 0, 1, 1, 0])
  labels = np.array([1, 0, 1, 0, 1])
  groups = np.array([0, 0, 1, 1, 3])
  assert recipe.accuracies(pred, labels, groups) == [60.0, 0.0]
  assert recipe.accuracies(pred[:4], labels[:4], groups[:4]) == [75.0, 50.0]


@pytest.mark.parametrize("size, grey", [(28, False), (16, False), (28, True)])
def test_features_against_loops(size, grey):
  images = np.random.default_rng(size).integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
  got = recipe.features(images, grey=grey)
  out = size // 2 if size == 28 else size
  want = np.zeros((2, out, out, 2))
  for n in range(2):
    for i in range(out):
      for j in range(out):
        for c in range(2):
          if size == 28:  # the papers' 2 x 2 average pooling of MNIST
            want[n, i, j, c] = images[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].mean() / 255
          else:
            want[n, i, j, c] = images[n, i, j, c] / 255
  if grey:
    want = want.sum(-1, keepdims=True)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want.reshape(2, -1), rtol=1e-6)
