"""Tests for APGD, APGD-T, Square and the suite against closed forms and a masked model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import attacks

# ------------------------------------------------------------------ linear binary model

_D = (4, 4, 1)
_RNG = np.random.default_rng(0)
_W = _RNG.normal(size=int(np.prod(_D))).astype(np.float32)
_B = np.float32(-0.5 * _W.sum())  # the decision boundary passes through the grey image
_OFF = np.float32(-50.0)  # two dummy classes far below: DLR and APGD-T need K >= 3, 4


def _linear(x):
  """Logits ``[m/2, -m/2, -50, -50]`` with ``m = w.x + b``: class 0 iff m > 0."""
  m = x.reshape(x.shape[0], -1) @ jnp.asarray(_W) + _B
  off = jnp.full_like(m, _OFF)
  return jnp.stack([0.5 * m, -0.5 * m, off, off], axis=-1)


def _np_margin(x):
  return x.reshape(x.shape[0], -1).astype(np.float64) @ _W.astype(np.float64) + float(_B)


def _closed_form_linf(x, y, eps):
  """The smallest (y=0) / largest (y=1) margin over the L-inf ball intersected with [0, 1]."""
  xf = x.reshape(x.shape[0], -1).astype(np.float64)
  w = _W.astype(np.float64)
  down = np.where(w > 0, np.minimum(eps, xf), np.minimum(eps, 1 - xf))  # room towards m -> -inf
  up = np.where(w > 0, np.minimum(eps, 1 - xf), np.minimum(eps, xf))
  m = _np_margin(x)
  worst = np.where(y == 0, m - (np.abs(w) * down).sum(1), m + (np.abs(w) * up).sum(1))
  x_opt = np.where((y == 0)[:, None], xf - np.sign(w) * down, xf + np.sign(w) * up)
  return worst, x_opt.reshape(x.shape)


def _points(n, lo, hi, worst_fn, band):
  """``n`` points in [lo, hi]^d whose worst-case margin is at least ``band`` from 0.

  Points within the band are skipped: there a float32 attack and the float64 closed form
  may disagree by rounding alone.
  """
  rng = np.random.default_rng(1)
  x = rng.uniform(lo, hi, size=(4 * n,) + _D).astype(np.float32)
  y = (_np_margin(x) <= 0).astype(np.int32)
  keep = np.abs(_np_margin(x)) > band
  keep &= np.abs(worst_fn(x, y)) > band
  x, y = x[keep][:n], y[keep][:n]
  assert len(x) == n
  return x, y


_EPS_INF = 0.06
_EPS_L2 = 0.15


@pytest.fixture(scope="module")
def linf_points():
  x, y = _points(256, 0.0, 1.0, lambda x, y: _closed_form_linf(x, y, _EPS_INF)[0], 0.02)
  worst, x_opt = _closed_form_linf(x, y, _EPS_INF)
  robust = np.where(y == 0, worst > 0, worst <= 0)
  assert 0.2 < robust.mean() < 0.8, robust.mean()  # both outcomes are exercised
  return x, y, robust, worst, x_opt


def _l2_worst(x, y):
  # Inside [eps, 1 - eps]^d the box never binds: the L2 optimum moves coordinate j by
  # eps * |w_j| / ||w|| <= eps.
  m = _np_margin(x)
  return np.where(y == 0, m - _EPS_L2 * np.linalg.norm(_W), m + _EPS_L2 * np.linalg.norm(_W))


@pytest.fixture(scope="module")
def l2_points():
  x, y = _points(256, _EPS_L2, 1 - _EPS_L2, _l2_worst, 0.02)
  worst = _l2_worst(x, y)
  robust = np.where(y == 0, worst > 0, worst <= 0)
  assert 0.2 < robust.mean() < 0.8, robust.mean()
  w = _W.astype(np.float64) / np.linalg.norm(_W)
  x_opt = x.reshape(len(x), -1) + np.where((y == 0)[:, None], -1.0, 1.0) * _EPS_L2 * w
  return x, y, robust, worst, x_opt.reshape(x.shape)


def _in_ball(x_adv, x, eps, norm):
  x_adv, x = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  d = (x_adv - x).reshape(len(x), -1)
  n = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
  assert n.max() <= eps * (1 + 1e-5) + 1e-6, n.max()


_KEY = jax.random.key(0)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_linf_finds_the_closed_form_optimum(linf_points, loss):
  x, y, robust, _, x_opt = linf_points
  x_adv, r = attacks.apgd_robust(_KEY, _linear, x, y, eps=_EPS_INF, num_steps=20, loss=loss)
  np.testing.assert_array_equal(np.asarray(r), robust)
  _in_ball(x_adv, x, _EPS_INF, "linf")
  # Where no point of the ball flips the class, the loss's maximiser is the vertex the
  # closed form gives (the linear margin's minimiser over the box-clipped ball).
  np.testing.assert_allclose(np.asarray(x_adv)[robust], x_opt[robust], atol=1e-5)


def test_apgd_l2_finds_the_closed_form_optimum(l2_points):
  x, y, robust, worst, x_opt = l2_points
  x_adv, r = attacks.apgd_robust(_KEY, _linear, x, y, eps=_EPS_L2, norm="l2", num_steps=20)
  np.testing.assert_array_equal(np.asarray(r), robust)
  _in_ball(x_adv, x, _EPS_L2, "l2")
  # L2 steps approach the optimum geometrically rather than landing on it.
  m = _np_margin(np.asarray(x_adv))
  np.testing.assert_allclose(m[robust], worst[robust], atol=2e-3)
  np.testing.assert_allclose(np.asarray(x_adv)[robust], x_opt[robust], atol=2e-3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_targeted_matches_closed_form(linf_points, l2_points, norm):
  x, y, robust, _, _ = linf_points if norm == "linf" else l2_points
  eps = _EPS_INF if norm == "linf" else _EPS_L2
  x_adv, r = attacks.apgd_targeted_robust(_KEY, _linear, x, y, eps=eps, norm=norm,
                                          num_steps=20, num_targets=3)
  np.testing.assert_array_equal(np.asarray(r), robust)
  _in_ball(x_adv, x, eps, norm)


def test_square_linf_matches_closed_form(linf_points):
  x, y, robust, worst, _ = linf_points
  x_adv, r = attacks.square_robust(_KEY, _linear, x, y, eps=_EPS_INF, num_queries=400)
  np.testing.assert_array_equal(np.asarray(r), robust)
  _in_ball(x_adv, x, _EPS_INF, "linf")
  # Random search over the ball's vertices reaches the optimal vertex on 16 pixels.
  np.testing.assert_allclose(_np_margin(np.asarray(x_adv))[robust], worst[robust], atol=1e-4)


def test_suite_matches_closed_form_and_is_cumulative(linf_points):
  x, y, robust, _, _ = linf_points
  masks = attacks.robust_suite(_KEY, _linear, x, y, eps=_EPS_INF, num_steps=20, num_targets=3,
                               num_queries=400)
  assert list(masks) == ["clean", "apgd_ce", "apgd_t", "fab_t", "square"]
  assert np.asarray(masks["clean"]).all()
  for k in ("apgd_ce", "apgd_t", "fab_t", "square"):
    np.testing.assert_array_equal(np.asarray(masks[k]), robust, err_msg=k)
  acc = attacks.robust_accuracy_suite(_KEY, _linear, x, y, eps=_EPS_INF, num_steps=20,
                                      num_targets=3, num_queries=400)
  assert math.isclose(float(acc["robust"]), robust.mean(), abs_tol=1e-6)


def test_suite_subset_runs_only_those_attacks_in_the_standard_order(linf_points):
  x, y, robust, _, _ = linf_points
  x, y, robust = x[:32], y[:32], robust[:32]
  acc = attacks.robust_accuracy_suite(_KEY, _linear, x, y, eps=_EPS_INF, num_steps=20,
                                      num_targets=3, attacks=("fab_t", "apgd_ce"))
  assert list(acc) == ["clean", "apgd_ce", "fab_t", "robust"]
  for k in ("apgd_ce", "fab_t", "robust"):
    assert math.isclose(float(acc[k]), robust.mean(), abs_tol=1e-6), k


# Square L2 is a random search over the paper's window patterns, not a gradient method: on
# this 16-pixel linear model it lowers the margin by 63-92 % of the optimum eps ||w||_2 on
# the robust points (keys 0-2, 400 queries; 1,000 queries gain nothing; torchattacks'
# Square L2 reaches less on a 10x10 linear model). So a point the closed form flips counts
# only if it flips by more than _SQ_L2_SHORT of the optimum; a point the closed form calls
# robust must stay robust.
_SQ_L2_SHORT = 0.45


@pytest.fixture(scope="module")
def square_l2_on_l2_points(l2_points):
  x, y, _, _, _ = l2_points
  x_adv, r = attacks.square_robust(_KEY, _linear, x, y, eps=_EPS_L2, norm="l2",
                                   num_queries=400)
  return np.asarray(x_adv), np.asarray(r)


def test_square_l2_matches_closed_form(l2_points, square_l2_on_l2_points):
  x, y, robust, worst, _ = l2_points
  x_adv, r = square_l2_on_l2_points
  _in_ball(x_adv, x, _EPS_L2, "l2")
  opt = _EPS_L2 * np.linalg.norm(_W.astype(np.float64))  # the optimal margin change
  clear = robust | (np.abs(worst) > _SQ_L2_SHORT * opt)
  assert clear.sum() >= 180 and (~robust[clear]).sum() >= 60, (clear.sum(), robust.sum())
  np.testing.assert_array_equal(r[clear], robust[clear])
  # On the robust points (never stopped early): the margin moved towards the boundary by
  # at least 1 - _SQ_L2_SHORT of the optimum, and never by more than the optimum.
  moved = np.abs(_np_margin(x) - _np_margin(x_adv))[robust] / opt
  assert moved.min() >= 1 - _SQ_L2_SHORT and moved.max() <= 1 + 1e-5, (moved.min(), moved.max())


def test_suite_l2_matches_closed_form(l2_points, square_l2_on_l2_points):
  x, y, robust, _, _ = l2_points
  masks = attacks.robust_suite(_KEY, _linear, x, y, eps=_EPS_L2, norm="l2", num_steps=20,
                               num_targets=3, num_queries=400)
  assert list(masks) == ["clean", "apgd_ce", "apgd_t", "fab_t", "square"]
  for k in ("apgd_ce", "apgd_t", "fab_t", "square"):
    np.testing.assert_array_equal(np.asarray(masks[k]), robust, err_msg=k)
  # The worst case is no weaker than Square L2 alone (which misses some flippable points).
  sq = square_l2_on_l2_points[1]
  assert np.asarray(masks["square"]).mean() <= sq.mean() and (sq & ~robust).any()


def test_pgd_matches_closed_form(linf_points):
  x, y, robust, _, _ = linf_points
  _, r = attacks.pgd_robust(_KEY, _linear, x, y, eps=_EPS_INF, step_size=_EPS_INF / 4,
                            num_steps=20, unroll=False)
  np.testing.assert_array_equal(np.asarray(r), robust)


# ------------------------------------------------------------------ APGD internals


def test_checkpoints_follow_the_papers_recursion():
  # The paper's p_j for N = 100, written out: 0, .22, .41, .57, .70, .80, .87, .93, .99.
  assert [i + 1 for i, _ in attacks.checkpoints(100)] == [22, 41, 57, 70, 80, 87, 93, 99]
  assert [k for _, k in attacks.checkpoints(100)] == [22, 19, 16, 13, 10, 7, 6, 6]
  for n in (1, 7, 50, 1000):
    got = attacks.checkpoints(n)
    ends = [i + 1 for i, _ in got]
    assert ends == sorted(set(ends)) and ends[-1] <= n and ends[0] >= 1, (n, ends)
    assert sum(k for _, k in got) == ends[-1]
  assert [i + 1 for i, _ in attacks.checkpoints(50)] == [11, 21, 29, 35, 40, 44, 47, 50]


_KM = jax.random.split(jax.random.key(3), 3)
_W1 = np.asarray(jax.random.normal(_KM[0], (48, 32))) * 0.5
_W2 = np.asarray(jax.random.normal(_KM[1], (32, 10))) * 0.5


def _mlp(x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(_W1))
  return h @ jnp.asarray(_W2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_trace_is_the_best_loss_so_far(norm):
  x = jax.random.uniform(jax.random.key(4), (16, 4, 4, 3))
  y = jnp.argmax(_mlp(x), -1).astype(jnp.int32)
  eps = 0.03 if norm == "linf" else 0.2
  x_best, trace = attacks.apgd_trace(_KEY, _mlp, x, y, eps=eps, norm=norm, num_steps=30)
  trace = np.asarray(trace)
  # Maximised loss: the best-so-far trace is non-decreasing.
  assert (np.diff(trace, axis=0) >= 0).all()
  _in_ball(x_best, x, eps, norm)
  def ce(z):  # float64 NumPy cross-entropy of the model's logits
    z = np.asarray(_mlp(z), np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return lse - z[np.arange(len(z)), np.asarray(y)]
  np.testing.assert_allclose(trace[-1], ce(x_best), rtol=1e-5, atol=1e-6)
  assert (trace[-1] > ce(x) + 1e-3).all()  # the attack raised every example's loss


def _eta_loops(s):
  """The paper's eta(s), float64, written as nested rectangles (one loop per ring)."""
  def rings(rows, cols):
    d = np.zeros((rows, cols))
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0, c0) + 1):
      d[max(r0 - k, 0):r0 + k + 1, max(c0 - k, 0):c0 + k + 1] += 1.0 / (k + 1) ** 2
    return d / np.linalg.norm(d) if rows else d
  e = np.concatenate([rings(s // 2, s), -rings(s - s // 2, s)])
  return e / np.linalg.norm(e)


def test_square_l2_window_pattern_is_the_papers_eta():
  eta = jax.jit(attacks.square_attack.eta, static_argnums=1)  # the side traced, as in the loop
  for side in range(1, 11):
    e = np.asarray(eta(jnp.int32(side), 10))
    np.testing.assert_allclose(e[:side, :side], _eta_loops(side), atol=1e-6, err_msg=side)
    assert not e[side:].any() and not e[:, side:].any()


# ------------------------------------------------------------------ gradient masking

_Q = 255.0


def _masked(x):
  """The linear model behind a straight ``round`` to 8 bits: zero input gradient everywhere."""
  return _linear(jnp.round(x * _Q) / _Q)


@pytest.fixture(scope="module")
def masked_points():
  # Class-0 points on the 8-bit grid that the L-inf worst case (moving the margin by
  # eps ||w||_1) flips, but whose margin exceeds 1.5 eps ||w||_2, about 2.6 standard
  # deviations of what a random start in the ball moves it by (eps ||w||_2 / sqrt(3)).
  eps = 8 / 255
  rng = np.random.default_rng(2)
  x = np.round(rng.uniform(0.1, 0.9, size=(2000,) + _D) * _Q).astype(np.float32) / _Q
  m = _np_margin(x)
  worst, _ = _closed_form_linf(x, np.zeros(len(x), np.int32), eps)
  keep = (m > 1.5 * eps * np.linalg.norm(_W)) & (worst < -0.02)
  x = x[keep][:64]
  assert len(x) == 64
  return x, np.zeros(len(x), np.int32), eps


def test_gradient_masking_fools_pgd_and_apgd_but_not_square(masked_points):
  x, y, eps = masked_points
  pgd = float(attacks.robust_accuracy(_KEY, _masked, x, y, eps=eps, step_size=eps / 4,
                                      num_steps=10, unroll=False))
  _, r_sq = attacks.square_robust(_KEY, _masked, x, y, eps=eps, num_queries=300)
  acc = attacks.robust_accuracy_suite(_KEY, _masked, x, y, eps=eps, num_steps=10,
                                      num_targets=3, num_queries=300)
  apgd = float(acc["apgd_ce"])  # APGD-CE runs first in the suite, on every clean-correct point
  apgd_t, fab_t = float(acc["apgd_t"]), float(acc["fab_t"])
  sq = float(np.mean(np.asarray(r_sq)))
  # Every point is breakable (closed form); the gradient attacks see a flat loss (FAB-T's
  # linearisation has a zero normal: its projection cannot reach the boundary).
  assert pgd >= 0.8 and apgd >= 0.8 and apgd_t >= 0.8 and fab_t >= 0.8, (pgd, apgd, apgd_t, fab_t)
  assert sq <= 0.05, sq
  assert float(acc["robust"]) <= min(pgd, apgd, sq) + 1e-6


@pytest.fixture(scope="module")
def masked_l2_points():
  # Class-0 points on the 8-bit grid inside [eps, 1 - eps] (the box never binds), so the L2
  # worst case moves the margin by eps ||w||_2 = opt and flips them all. Their margin lies in
  # (0.45, 0.5) opt: a random start in the L2 ball moves it by about opt / 4 (one standard
  # deviation in 16 dimensions), so it rarely flips one; Square L2 reaches >= 0.55 opt.
  opt = _EPS_L2 * np.linalg.norm(_W)
  rng = np.random.default_rng(3)
  x = np.round(rng.uniform(_EPS_L2, 1 - _EPS_L2, size=(20000,) + _D) * _Q).astype(np.float32) / _Q
  m = _np_margin(x)
  x = x[(m > 0.45 * opt) & (m < 0.5 * opt)][:64]
  assert len(x) == 64
  return x, np.zeros(len(x), np.int32)


def test_gradient_masking_l2_fools_pgd_and_apgd_but_not_square(masked_l2_points):
  x, y = masked_l2_points
  pgd = float(attacks.robust_accuracy(_KEY, _masked, x, y, eps=_EPS_L2, norm="l2",
                                      step_size=_EPS_L2 / 4, num_steps=10, unroll=False))
  acc = attacks.robust_accuracy_suite(_KEY, _masked, x, y, eps=_EPS_L2, norm="l2", num_steps=10,
                                      num_targets=3, num_queries=300)
  apgd, apgd_t, fab_t = float(acc["apgd_ce"]), float(acc["apgd_t"]), float(acc["fab_t"])
  # Square runs last, on what FAB-T left: its share of the breaks is fab_t - square.
  assert pgd >= 0.8 and apgd >= 0.8 and apgd_t >= 0.8 and fab_t >= 0.8, (pgd, apgd, apgd_t,
                                                                          fab_t)
  assert float(acc["square"]) <= 0.05, acc
  assert float(acc["robust"]) <= min(pgd, apgd, apgd_t) + 1e-6


# ------------------------------------------------------------------ compile once, bad input


def test_second_batch_of_the_same_shape_does_not_recompile():
  x = jax.random.uniform(jax.random.key(5), (8, 4, 4, 3))
  y = jnp.zeros(8, jnp.int32)
  attacks.square_robust(_KEY, _mlp, x, y, eps=0.03, num_queries=5)
  attacks.square_robust(_KEY, _mlp, x, y, eps=0.3, norm="l2", num_queries=5)
  attacks.apgd_robust(_KEY, _mlp, x, y, eps=0.03, num_steps=3)
  n_sq = attacks.square_attack._square_impl._cache_size()
  n_ap = attacks.auto._apgd_impl._cache_size()
  attacks.square_robust(jax.random.key(1), _mlp, x[::-1], y + 1, eps=0.05, num_queries=5)
  x_adv = attacks.square(jax.random.key(1), _mlp, x[::-1], y + 1, eps=0.5, norm="l2",
                         num_queries=5)
  attacks.apgd_robust(jax.random.key(1), _mlp, x[::-1], y + 1, eps=0.05, num_steps=3)
  assert attacks.square_attack._square_impl._cache_size() == n_sq
  assert attacks.auto._apgd_impl._cache_size() == n_ap
  # Uniform pixels in [0, 1], 3 channels: the clip to [0, 1] binds and the L2 start and
  # updates run per channel; every point stays in the ball (float32: rel 1e-5 + 1e-6).
  _in_ball(x_adv, x[::-1], 0.5, "l2")
  assert np.isfinite(np.asarray(x_adv)).all()


def test_attacks_jit_with_images_closed_over():
  # The [0, 1] check reads concrete images; inside an outer jit they are constants, not
  # tracers, and the check must still run on the host rather than fail to concretize.
  x = jnp.full((2, 4, 4, 1), 0.5)
  y = jnp.zeros(2, jnp.int32)
  r = jax.jit(lambda k: attacks.apgd_robust(k, _linear, x, y, eps=0.01, num_steps=1)[1])(_KEY)
  assert r.shape == (2,)


_X = np.full((2, 4, 4, 1), 0.5, np.float32)
_Y = np.zeros(2, np.int32)


@pytest.mark.parametrize("call, match", [
    (lambda: attacks.apgd(_KEY, _linear, _X, _Y, eps=-0.1), "eps"),
    (lambda: attacks.apgd(_KEY, _linear, _X, _Y, eps=0.1, num_steps=0), "num_steps"),
    (lambda: attacks.apgd(_KEY, _linear, _X, _Y, eps=0.1, norm="l1"), "norm"),
    (lambda: attacks.apgd(_KEY, _linear, _X, _Y, eps=0.1, loss="hinge"), "loss"),
    (lambda: attacks.apgd(_KEY, _linear, _X, _Y, eps=0.1, restarts=0), "restarts"),
    (lambda: attacks.apgd_targeted(_KEY, lambda z: _linear(z)[:, :3], _X, _Y, eps=0.1),
     "at least 4 classes"),
    (lambda: attacks.apgd_targeted(_KEY, _linear, _X, _Y, eps=0.1, num_targets=4),
     "num_targets"),
    (lambda: attacks.apgd(_KEY, lambda z: _linear(z)[:, :2], _X, _Y, eps=0.1, loss="dlr"),
     "at least 3 classes"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=0.1, num_queries=0), "num_queries"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=-1.0), "eps"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=0.1, norm="l1"), "norm"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=-0.5, norm="l2"), "eps"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=0.5, norm="l2", num_queries=0),
     "num_queries"),
    (lambda: attacks.square(_KEY, _linear, _X * 255, _Y, eps=0.5, norm="l2"), r"\[0, 1\]"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=0.1, norm="L2"), "norm"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=-0.1, norm="l2"), "eps"),
    (lambda: attacks.square(_KEY, _linear, _X, _Y, eps=0.1, p_init=1.5), "p_init"),
    (lambda: attacks.robust_accuracy_suite(_KEY, lambda z: _linear(z)[:, :3], _X, _Y, eps=0.1),
     "4 classes"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=0.1, num_queries=0),
     "num_queries"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=0.1, attacks=("fab",)),
     "attacks must be distinct names"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=0.1, attacks="square"),
     "attacks must be a sequence"),
    (lambda: attacks.robust_accuracy_suite(_KEY, _linear, _X, _Y, eps=0.1, attacks=()),
     "at least one"),
])
def test_bad_input_names_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
