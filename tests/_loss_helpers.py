"""Tiny pure-JAX models, data and float64 NumPy references shared by the loss tests
(tests/test_losses.py, tests/test_wdro.py); not a test module."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from drojax import losses as L

# ----------------------------------------------------------------------------------------------
# Tiny pure-JAX models (test-only).


def _mlp_params(key, d=12, h=8, k=4, dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": (jax.random.normal(k1, (d, h)) / np.sqrt(d)).astype(dtype),
          "b1": (0.1 * jax.random.normal(k3, (h,))).astype(dtype),
          "w2": (jax.random.normal(k2, (h, k)) / np.sqrt(h)).astype(dtype)}


def _mlp(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"][None])
  return h @ params["w2"]


def _conv_params(key, c=3, f=4, k=4):
  k1, k2 = jax.random.split(key)
  return {"conv": jax.random.normal(k1, (3, 3, c, f)) / np.sqrt(9 * c),
          "dense": jax.random.normal(k2, (f, k)) / np.sqrt(f)}


def _conv(params, x):
  y = jax.lax.conv_general_dilated(x, params["conv"], (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = jax.nn.relu(y)
  return jnp.mean(y, axis=(1, 2)) @ params["dense"]


def _ce_loss_fn(model, params):
  def loss_fn(x, y):
    return L.cross_entropy(model(params, x), y)
  return loss_fn


def _mlp_data(key, b=8, d=12, k=4, dtype=jnp.float32):
  kx, ky = jax.random.split(key)
  x = jax.random.uniform(kx, (b, d), dtype)
  y = jax.nn.softmax(jax.random.normal(ky, (b, k))).astype(dtype)
  return x, y


def _cos(a, b):
  a = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(a)]).astype(np.float64)
  b = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(b)]).astype(np.float64)
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------
# NumPy references.


# The ground-cost norms' exponents p, written out independently of drojax.wdro.norm_exponent.
P_OF_NORM = {"l1": 1.0, "l2": 2.0, "l3": 3.0, "linf": math.inf}


def _np_dual_norms(g, norm):
  norm = P_OF_NORM[norm]
  flat = np.asarray(g, np.float64).reshape(len(g), -1)
  if norm == 1:
    return np.abs(flat).max(axis=1)
  if math.isinf(norm):
    return np.abs(flat).sum(axis=1)
  r = norm / (norm - 1)
  return (np.abs(flat) ** r).sum(axis=1) ** (1 / r)


def _np_penalty(g, q, norm):
  n = _np_dual_norms(g, norm)
  if math.isinf(q):
    return n.max()
  return np.mean(n ** q) ** (1 / q)


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(axis=-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


Q_VALUES = [1.0, 2.0, 3.0, math.inf]
NORMS = ["l1", "l2", "l3", "linf"]
