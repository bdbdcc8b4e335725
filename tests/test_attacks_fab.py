"""Tests for FAB / FAB-T against closed forms (linear models) and float64 LP/QP solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize

from drojax import attacks
from drojax.attacks import fab_attack as fab_mod

_KEY = jax.random.key(0)

# ------------------------------------------------------------------ the projection vs LP/QP


def _lp_projection(w, c, x, norm):
  """Float64 ``min ||d|| s.t. <w, d> = c, 0 <= x + d <= 1`` (None where infeasible)."""
  n = len(w)
  box = [(-xi, 1.0 - xi) for xi in x]
  if norm == "l2":
    d0 = np.clip(c * w / max(w @ w, 1e-30), -x, 1 - x)
    res = optimize.minimize(lambda d: 0.5 * d @ d, d0, jac=lambda d: d, bounds=box,
                            constraints=[{"type": "eq", "fun": lambda d: w @ d - c,
                                          "jac": lambda d: w}],
                            method="SLSQP", options={"ftol": 1e-15, "maxiter": 500})
    return np.linalg.norm(res.x) if res.success and abs(w @ res.x - c) < 1e-9 else None
  # Variables (d, u): L-inf: u is one bound t on every |d_i|; L1: u_i >= |d_i| per coordinate.
  m = 1 if norm == "linf" else n
  cost = np.concatenate([np.zeros(n), np.ones(m)])
  lift = np.ones((n, 1)) if norm == "linf" else np.eye(n)
  a_ub = np.block([[np.eye(n), -lift], [-np.eye(n), -lift]])
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n),
                         A_eq=np.concatenate([w, np.zeros(m)])[None], b_eq=[c],
                         bounds=box + [(0, None)] * m, method="highs")
  return res.fun if res.status == 0 else None


def _np_norm(d, norm, axis=-1):
  d = np.asarray(d, np.float64)
  if norm == "linf":
    return np.abs(d).max(axis)
  if norm == "l2":
    return np.linalg.norm(d, axis=axis)
  return np.abs(d).sum(axis)


_N_ROWS, _N_DIM = 6, 7
_proj = {norm: jax.jit(lambda w, c, x, norm=norm: fab_mod.project_hyperplane_box(
    w, c, x, norm=norm)) for norm in attacks.FAB_NORMS}


@pytest.mark.parametrize("norm", attacks.FAB_NORMS)
@given(seed=st.integers(0, 2**31 - 1))
def test_projection_matches_a_float64_lp_or_qp(norm, seed):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(_N_ROWS, _N_DIM))
  w[rng.uniform(size=w.shape) < 0.15] = 0.0  # zero weights: free and useless coordinates
  x = rng.choice([0.0, 1.0, 0.5, rng.uniform()], size=w.shape)  # the box often binds
  reach = np.abs(w) * np.where(w > 0, 1 - x, x)  # the largest <w, d> a positive c can reach
  c = rng.uniform(-1, 1, size=_N_ROWS) * reach.sum(1) * rng.choice([0.3, 0.9, 1.5], _N_ROWS)
  d = np.asarray(_proj[norm](jnp.float32(w), jnp.float32(c), jnp.float32(x)), np.float64)
  assert np.all(x + d >= -1e-6) and np.all(x + d <= 1 + 1e-6)
  for i in range(_N_ROWS):
    opt = _lp_projection(w[i], c[i], x[i], norm)
    if opt is None:  # out of reach: every useful coordinate at its bound, the rest still
      sat = np.sign(w[i] * c[i]) * np.where(w[i] * np.sign(c[i]) > 0, 1 - x[i], x[i])
      np.testing.assert_allclose(d[i], np.where(w[i] != 0, sat, 0.0), atol=1e-6)
      continue
    scale = np.abs(w[i]).sum() + abs(c[i])
    assert abs(w[i] @ d[i] - c[i]) <= 1e-5 * scale, (i, w[i] @ d[i], c[i])
    np.testing.assert_allclose(_np_norm(d[i], norm), opt, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ linear K-class model

_D = (4, 4, 1)
_K = 5
_RNG = np.random.default_rng(0)
_WK = _RNG.normal(size=(int(np.prod(_D)), _K)).astype(np.float32)
_BK = _RNG.normal(size=_K).astype(np.float32) * 0.1


def _linear_k(x):
  return x.reshape(x.shape[0], -1) @ jnp.asarray(_WK) + jnp.asarray(_BK)[None]


def _min_dist(x, norm):
  """Float64 closed form: the smallest distance to a class change (the box not binding)."""
  xf = x.reshape(len(x), -1).astype(np.float64)
  z = xf @ _WK.astype(np.float64) + _BK.astype(np.float64)
  y = z.argmax(1)
  dual = {"linf": 1, "l2": 2, "l1": np.inf}[norm]
  best = np.full(len(x), np.inf)
  for k in range(_K):
    v = _WK[:, y].T.astype(np.float64) - _WK[:, k].astype(np.float64)[None]  # [n, D]
    dist = (z[np.arange(len(x)), y] - z[:, k]) / np.maximum(
        np.linalg.norm(v, ord=dual, axis=1), 1e-30)
    best = np.where(y == k, best, np.minimum(best, dist))
  return y.astype(np.int32), best


_EPS = {"linf": 0.085, "l2": 0.26}


@pytest.fixture(scope="module")
def linear_points():
  # Points in [0.35, 0.65]^d: each minimal perturbation moves a pixel by at most its norm
  # (< 0.34 here), so the box never binds. Points within 3 % of eps are dropped: there a
  # float32 attack and the float64 closed form may disagree by rounding alone.
  rng = np.random.default_rng(1)
  x = rng.uniform(0.35, 0.65, size=(400,) + _D).astype(np.float32)
  keep = np.ones(len(x), bool)
  for norm, eps in _EPS.items():
    _, dist = _min_dist(x, norm)
    keep &= (dist < 0.34) & (np.abs(dist / eps - 1) > 0.03)
  x = x[keep][:48]
  assert len(x) == 48
  return x


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [True, False])
def test_fab_finds_the_closed_form_minimal_distance(linear_points, norm, targeted):
  x = linear_points
  y, dist = _min_dist(x, norm)
  eps = _EPS[norm]
  robust_cf = dist > eps
  assert 0.2 < robust_cf.mean() < 0.8, robust_cf.mean()  # both outcomes exercised
  x_adv, robust = attacks.fab_robust(_KEY, _linear_k, x, y, eps=eps, norm=norm, num_steps=20,
                                     targeted=targeted, num_targets=_K - 1)
  np.testing.assert_array_equal(np.asarray(robust), robust_cf)
  found = _np_norm((np.asarray(x_adv) - x).reshape(len(x), -1), norm)
  flipped = ~robust_cf
  assert np.all(np.asarray(_linear_k(x_adv)).argmax(1)[flipped] != y[flipped])
  assert np.all(found[flipped] <= 1.01 * dist[flipped]), (found / dist)[flipped].max()
  assert np.all(found[flipped] >= (1 - 1e-4) * dist[flipped])  # nothing beats the optimum
  np.testing.assert_array_equal(np.asarray(x_adv)[robust_cf], x[robust_cf])
  # The minimal distances also decide every other eps: a huge budget flips every point.
  _, r_all = attacks.fab_robust(_KEY, _linear_k, x, y, eps=10.0, norm=norm, num_steps=20,
                                targeted=targeted, num_targets=_K - 1)
  assert not np.asarray(r_all).any()


# ------------------------------------------------------------------ the box binds


def _box_images():
  """Images whose most useful pixels (largest |w|) sit at the bound that blocks them."""
  rng = np.random.default_rng(5)
  n = int(np.prod(_D))
  x = rng.choice([0.0, 1.0, 0.4, 0.6], size=(400, n)).astype(np.float32)
  big = np.argsort(-np.abs(_WB))[: n // 2]
  x[:, big] = (_WB[big] < 0).astype(np.float32)
  return x


_WB = np.random.default_rng(4).normal(size=int(np.prod(_D))).astype(np.float32)
_BB = np.float32(0.3 - np.median(_box_images() @ _WB))  # about half the images are class 0


def _binary(x):
  m = x.reshape(x.shape[0], -1) @ jnp.asarray(_WB) + _BB
  return jnp.stack([m, jnp.zeros_like(m)], axis=-1)


@pytest.fixture(scope="module")
def box_points():
  # Class-0 points where the clip binds at the optimum: the unclipped closed form is
  # clearly below the float64 LP/QP solution for every point kept.
  x = _box_images()
  m = x.astype(np.float64) @ _WB.astype(np.float64) + float(_BB)
  keep = (m > 0.05) & (m < 2.0)
  x, m = x[keep][:16], m[keep][:16]
  assert len(x) == 16
  out = {}
  for norm in attacks.FAB_NORMS:
    opt = np.array([_lp_projection(-_WB.astype(np.float64), mi, xi.astype(np.float64), norm)
                    for xi, mi in zip(x, m)])
    dual = {"linf": 1, "l2": 2, "l1": np.inf}[norm]
    unclipped = m / np.linalg.norm(_WB.astype(np.float64), ord=dual)
    assert np.all(opt > 1.05 * unclipped), norm  # the box binds
    out[norm] = opt
  return x.reshape((-1,) + _D), out


@pytest.mark.parametrize("norm", attacks.FAB_NORMS)
def test_fab_respects_the_box_and_matches_the_lp_or_qp(box_points, norm):
  x, opt = box_points
  opt = opt[norm]
  eps = 10.0  # every point is flipped; the distance found is what is checked
  x_adv = attacks.fab(_KEY, _binary, x, np.zeros(len(x), np.int32), eps=eps, norm=norm,
                      num_steps=30)
  x_adv = np.asarray(x_adv, np.float64)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert np.all(np.asarray(_binary(x_adv)).argmax(1) == 1)
  found = _np_norm((x_adv - x).reshape(len(x), -1), norm)
  assert np.all(found >= (1 - 1e-4) * opt), (found / opt).min()
  assert np.all(found <= 1.01 * opt), (found / opt).max()


# ------------------------------------------------------------------ a nonlinear model

_KM = jax.random.split(jax.random.key(3), 3)
_W1 = jax.random.normal(_KM[0], (48, 32)) * 0.5
_W2 = jax.random.normal(_KM[1], (32, 10)) * 0.5


def _mlp(x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ _W1) @ _W2


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3), ("l1", 1.0)])
def test_every_point_lies_in_the_ball_and_the_box(norm, eps):
  x = jax.random.uniform(jax.random.key(5), (16, 4, 4, 3))
  y = jnp.argmax(_mlp(x), -1).astype(jnp.int32)
  x_adv, robust = attacks.fab_robust(_KEY, _mlp, x, y, eps=eps, norm=norm, num_steps=10,
                                     targeted=True, num_targets=3, restarts=2)
  x_adv = np.asarray(x_adv, np.float64)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  d = _np_norm((x_adv - np.asarray(x)).reshape(16, -1), norm)
  assert d.max() <= eps * (1 + 1e-5) + 1e-6, d.max()
  fooled = ~np.asarray(robust)
  assert 0 < fooled.sum() < 16, fooled.sum()  # the budget bites, not everywhere
  assert np.all(np.asarray(_mlp(x_adv)).argmax(1)[fooled] != np.asarray(y)[fooled])


def test_second_batch_of_the_same_shape_does_not_recompile():
  x = jax.random.uniform(jax.random.key(6), (8, 4, 4, 3))
  y = jnp.zeros(8, jnp.int32)
  attacks.fab_robust(_KEY, _mlp, x, y, eps=0.05, num_steps=3, targeted=True, num_targets=2)
  n = fab_mod._fab_impl._cache_size()
  attacks.fab_robust(jax.random.key(1), _mlp, x[::-1], y + 1, eps=0.1, num_steps=3,
                     targeted=True, num_targets=2, alpha_max=0.2, eta=1.1, beta=0.8)
  assert fab_mod._fab_impl._cache_size() == n


_X = np.full((2, 4, 4, 1), 0.5, np.float32)
_Y = np.zeros(2, np.int32)


@pytest.mark.parametrize("kw, match", [
    (dict(norm="L2"), "norm must be one of"),
    (dict(targeted=True, num_targets=5), "num_targets must be <= K - 1 = 4"),
    (dict(alpha_max=1.5), "alpha_max must be in"),
    (dict(alpha_max=-0.1), "alpha_max must be in"),
    (dict(eta=0.9), "eta must be >= 1"),
    (dict(beta=1.0), r"beta must be in \(0, 1\)"),
    (dict(beta=0.0), r"beta must be in \(0, 1\)"),
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(num_steps=0), "num_steps"),
    (dict(restarts=0), "restarts"),
])
def test_bad_input_names_the_argument(kw, match):
  kw = dict(dict(eps=0.1), **kw)
  with pytest.raises(ValueError, match=match):
    attacks.fab(_KEY, _linear_k, _X, _Y, **kw)


def test_bad_model_and_images_name_the_argument():
  with pytest.raises(ValueError, match="at least 2 classes"):
    attacks.fab(_KEY, lambda z: _linear_k(z)[:, :1], _X, _Y, eps=0.1)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    attacks.fab(_KEY, _linear_k, _X * 255, _Y, eps=0.1)
