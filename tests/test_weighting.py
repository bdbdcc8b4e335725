"""Tests for drojax.weighting (and drojax.objectives.tracked_weights, Var-DRO's use of it)
against independent references (scipy linprog, NumPy loops)."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from scipy.optimize import linprog

from drojax import weighting as W


def _linprog_weights(losses, eps):
  """Reference LP solution (float64 HiGHS): max l.q, sum q = 1, box bounds."""
  losses = np.asarray(losses, np.float64)
  b = losses.shape[0]
  eps = np.broadcast_to(np.asarray(eps, np.float64), (b,))
  # An upper bound >= 1 never binds (sum q = 1, q >= 0): capping it keeps huge radii finite.
  upper = np.where(eps >= np.log(b), 1.0, np.exp(np.minimum(eps, np.log(b))) / b)
  bounds = list(zip(np.exp(-eps) / b, upper))
  res = linprog(-losses, A_eq=np.ones((1, b)), b_eq=[1.0], bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return res.x


def _check_feasible(q, eps, b, tol=1e-6):
  q = np.asarray(q, np.float64)
  eps = np.broadcast_to(np.asarray(eps, np.float64), (b,))
  np.testing.assert_allclose(q.sum(), 1.0, atol=tol)
  assert np.all(q >= np.exp(-eps) / b * (1 - tol) - 1e-12)
  with np.errstate(over="ignore"):  # e^eps = inf is a valid (absent) upper bound
    assert np.all(q <= np.exp(eps) / b * (1 + tol) + 1e-12)


def _instance(seed, b, *, scalar_eps=False, ties=False):
  rng = np.random.default_rng(seed)
  losses = rng.exponential(1.0, size=b)
  if ties:
    losses = np.round(losses * 2) / 2  # many exactly equal values
  eps = rng.uniform(0.0, 2.0) if scalar_eps else rng.uniform(0.0, 2.0, size=b)
  return losses.astype(np.float32), np.asarray(eps, np.float32)


_SOLVERS = {
    "auto": jax.jit(W.water_filling),  # dense up to B = 256, sort above
    "sort": jax.jit(lambda l, e: W._water_filling(l, e, method="sort")),
    "dense": jax.jit(lambda l, e: W._water_filling(l, e, method="dense")),
}


class WaterFillingTest(parameterized.TestCase):

  @parameterized.product(method=["sort", "dense"], ties=[False, True])
  def test_matches_linprog(self, method, ties):
    sizes = [1, 2, 3, 7, 16, 64, 256] + ([700] if method == "sort" else [])
    for n, b in enumerate(sizes):
      scalar_eps = n % 3 == 1  # a scalar radius for some sizes, [B] radii for the others
      losses, eps = _instance(b * 7 + scalar_eps + 3 * ties, b, scalar_eps=scalar_eps, ties=ties)
      q = _SOLVERS[method](losses, eps)
      ref = _linprog_weights(losses, eps)
      l64 = losses.astype(np.float64)
      np.testing.assert_allclose(np.dot(np.asarray(q, np.float64), l64), np.dot(ref, l64),
                                 atol=1e-6, rtol=0, err_msg=f"B={b}")
      _check_feasible(q, eps, b)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_linprog_jit_and_no_jit(self):
    for seed, ties in [(0, False), (1, True)]:
      losses, eps = _instance(seed, 5, ties=ties)
      q = self.variant(W.water_filling)(losses, eps)
      ref = _linprog_weights(losses, eps)
      np.testing.assert_allclose(np.dot(np.asarray(q, np.float64), losses), np.dot(ref, losses),
                                 atol=1e-6, rtol=0)
      _check_feasible(q, eps, 5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_eps_is_uniform(self):
    losses = np.random.default_rng(0).normal(size=5).astype(np.float32)
    q = self.variant(W.water_filling)(losses, 0.0)
    np.testing.assert_allclose(q, np.full(5, 0.2), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_huge_eps_puts_mass_on_top_losses(self):
    losses = np.array([0.3, 2.0, 1.0, 2.0, -1.0], np.float32)
    q = np.asarray(self.variant(W.water_filling)(losses, 30.0))
    # Lower bounds are ~e^-30 / 5 ~ 0: everything goes to the two tied maxima, split evenly.
    np.testing.assert_allclose(q, [0, 0.5, 0, 0.5, 0], atol=1e-6)
    top1 = np.array([0.3, 2.5, 1.0, 2.0, -1.0], np.float32)
    q1 = np.asarray(self.variant(W.water_filling)(top1, 30.0))
    np.testing.assert_allclose(q1, [0, 1, 0, 0, 0], atol=1e-6)

  def test_ties_with_equal_eps_share_equally(self):
    losses = np.array([1.0, 3.0, 3.0, 3.0, 0.0, 1.0], np.float32)
    q = np.asarray(W.water_filling(losses, np.log(1.5)))
    # Bounds [1/9, 1/4]; budget 1 - 6/9 = 1/3 for three tied top losses with room 5/36 each.
    np.testing.assert_allclose(q[1:4], np.full(3, 1 / 9 + 1 / 9), rtol=1e-6)
    np.testing.assert_allclose(q[[0, 4, 5]], np.full(3, 1 / 9), rtol=1e-6)

  @hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([1, 5, 12]),
                    ties=st.booleans(), method=st.sampled_from(["sort", "dense"]))
  def test_permutation_equivariant(self, seed, b, ties, method):
    losses, eps = _instance(seed, b, ties=ties)
    perm = np.random.default_rng(seed + 1).permutation(b)
    q = np.asarray(_SOLVERS[method](losses, eps))
    q_perm = np.asarray(_SOLVERS[method](losses[perm], eps[perm]))
    # float32 sums in another order: seed 117, b 12 differs by 1.2e-7 (rel 1.19e-6) on jax 0.10
    # and 0.12 alike.
    np.testing.assert_allclose(q_perm, q[perm], rtol=1e-5, atol=1e-9)

  def test_sort_and_dense_agree(self):
    for seed, ties in [(0, False), (1, True), (2, True)]:
      losses, eps = _instance(seed, 200, ties=ties)
      np.testing.assert_allclose(_SOLVERS["sort"](losses, eps), _SOLVERS["dense"](losses, eps),
                                 rtol=1e-5, atol=1e-8)

  @hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([1, 5, 12]),
                    scalar_eps=st.booleans())
  def test_optimal_and_feasible_random(self, seed, b, scalar_eps):
    losses, eps = _instance(seed, b, scalar_eps=scalar_eps, ties=seed % 2 == 0)
    q = W.water_filling(losses, eps)
    ref = _linprog_weights(losses, eps)
    l64 = losses.astype(np.float64)
    np.testing.assert_allclose(np.dot(np.asarray(q, np.float64), l64), np.dot(ref, l64),
                               atol=1e-6, rtol=0)
    _check_feasible(q, eps, b)

  def test_vmap_equals_loop(self):
    rng = np.random.default_rng(3)
    losses = rng.normal(size=(4, 9)).astype(np.float32)
    eps = rng.uniform(0, 1, size=(4, 9)).astype(np.float32)
    batched = jax.jit(jax.vmap(W.water_filling))(losses, eps)
    batched_sort = jax.jit(jax.vmap(_SOLVERS["sort"]))(losses, eps)
    np.testing.assert_allclose(batched_sort, batched, rtol=1e-6)
    for i in range(4):
      ref = _linprog_weights(losses[i], eps[i])
      np.testing.assert_allclose(np.dot(batched[i], losses[i]), np.dot(ref, losses[i]),
                                 atol=1e-6)
      np.testing.assert_allclose(batched[i], W.water_filling(losses[i], eps[i]), atol=1e-7)

  def test_float64_matches_linprog_tightly(self):
    with jax.enable_x64(True):
      losses, eps = _instance(11, 200)
      losses, eps = losses.astype(np.float64), eps.astype(np.float64)
      q = W.water_filling(jnp.asarray(losses), jnp.asarray(eps))
      self.assertEqual(q.dtype, jnp.float64)
      ref = _linprog_weights(losses, eps)
      np.testing.assert_allclose(np.dot(q, losses), np.dot(ref, losses), atol=1e-9)

  def test_weights_are_constants_for_differentiation(self):
    losses = jnp.array([0.5, 2.0, 1.0, 0.1])
    eps = jnp.array([0.3, 0.1, 0.9, 0.2])
    grad_l, grad_e = jax.grad(lambda l, e: jnp.sum(W.water_filling(l, e) ** 2),
                              argnums=(0, 1))(losses, eps)
    np.testing.assert_array_equal(grad_l, 0.0)
    np.testing.assert_array_equal(grad_e, 0.0)
    q = W.water_filling(losses, eps)
    # Envelope gradient of the weighted loss: exactly q.
    g = jax.grad(lambda l: jnp.sum(W.water_filling(l, eps) * l))(losses)
    np.testing.assert_allclose(g, q)

  @parameterized.product(eps=[88.0, 89.0, 1e3, 1e30, np.inf], method=["sort", "dense"])
  def test_huge_radii_match_linprog(self, eps, method):
    # e^eps overflows float32 above ~88.7; the solver must stay exact up to eps = inf.
    for seed, ties, mixed in [(0, False, False), (1, True, False), (2, True, True)]:
      losses, small = _instance(seed, 9, ties=ties)
      eps_arr = np.where(np.arange(9) % 2 == 0, eps, small) if mixed else np.full(9, eps)
      eps_arr = eps_arr.astype(np.float32)
      q = np.asarray(_SOLVERS[method](losses, eps_arr), np.float64)
      self.assertTrue(np.all(np.isfinite(q)), q)
      ref = _linprog_weights(losses, eps_arr.astype(np.float64))
      l64 = losses.astype(np.float64)
      np.testing.assert_allclose(q @ l64, ref @ l64, atol=1e-6, rtol=0)
      _check_feasible(q, eps_arr, 9)
      if not ties and not mixed:  # a unique top loss takes all the mass
        np.testing.assert_allclose(q, np.eye(9)[np.argmax(losses)], atol=1e-7)

  @parameterized.parameters("sort", "dense")
  def test_infinite_radius_ties_share_evenly(self, method):
    losses = np.array([1.0, 3.0, 3.0, 0.5, 3.0], np.float32)
    eps = np.array([np.inf, np.inf, 2.0, np.inf, np.inf], np.float32)
    q = np.asarray(_SOLVERS[method](losses, eps))
    # The tie at 3.0 splits in proportion to room: the finite radius keeps its lower bound
    # (a zero share of an infinite room), the two unbounded members split the rest evenly.
    low = np.exp(-2.0) / 5
    np.testing.assert_allclose(q, [0.0, (1 - low) / 2, low, 0.0, (1 - low) / 2], atol=1e-7)

  def test_small_radii_keep_precision(self):
    # The budget 1 - sum e^-eps / B is computed with expm1: no cancellation at eps = 1e-6.
    with jax.enable_x64(True):
      losses, _ = _instance(4, 8)
      for e in (1e-6, 1e-3):
        eps = np.full(8, e)
        q32 = np.asarray(W.water_filling(jnp.asarray(losses), jnp.asarray(eps, jnp.float32)),
                         np.float64)
        ref = _linprog_weights(losses, eps)
        np.testing.assert_allclose(q32, ref, rtol=1e-5, atol=0)

  @parameterized.parameters("sort", "dense")
  def test_negative_or_nan_radius_under_jit_is_nan(self, method):
    losses = jnp.array([0.3, 2.0, 1.0])
    for eps in (-0.1, jnp.array([0.1, -1.0, 0.2]), np.nan):
      q = _SOLVERS[method](losses, jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (3,)))
      self.assertTrue(np.all(np.isnan(q)), f"eps={eps}: {q}")
    q = jax.jit(W.water_filling)(losses, -0.1)
    self.assertTrue(np.all(np.isnan(q)))
    # Under vmap only the problem with the bad radius is NaN.
    q = jax.jit(jax.vmap(W.water_filling))(jnp.stack([losses, losses]),
                                          jnp.array([[0.1, 0.1, 0.1], [0.1, -0.1, 0.1]]))
    self.assertTrue(np.all(np.isfinite(q[0])) and np.all(np.isnan(q[1])))

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "losses must have rank 1"):
      W.water_filling(jnp.ones((2, 3)), 0.1)
    with self.assertRaisesRegex(ValueError, r"eps must be a scalar or have shape \[B\]"):
      W.water_filling(jnp.ones(3), jnp.ones(4))
    with self.assertRaisesRegex(ValueError, "eps must be >= 0"):
      W.water_filling(jnp.ones(3), jnp.array([0.1, -0.2, 0.0]))
    with self.assertRaisesRegex(ValueError, "eps must be >= 0"):
      W.water_filling(jnp.ones(3), -1.0)
    with self.assertRaisesRegex(TypeError, "losses must be a floating-point array.*int32"):
      W.water_filling(jnp.ones(3, jnp.int32), 0.1)
    with self.assertRaisesRegex(ValueError, "at least one example"):
      W.water_filling(jnp.ones((0,)), 0.1)


def _np_tracker(n, batches, alpha):
  """NumPy loop: EMA mean/variance, first sighting initializes, duplicates averaged."""
  mean, var, count = np.zeros(n), np.zeros(n), np.zeros(n, int)
  for ids, losses in batches:
    groups = {}
    for i, l in zip(ids, losses):
      groups.setdefault(int(i), []).append(float(l))
    for i, ls in groups.items():
      l = np.mean(ls)
      if count[i] == 0:
        mean[i], var[i] = l, 0.0
      else:
        d = l - mean[i]
        mean[i] = mean[i] + alpha * d
        var[i] = (1 - alpha) * (var[i] + alpha * d * d)
      count[i] += 1
  return mean, var, count


class TrackerTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.1, 0.5, 1.0)
  def test_ema_matches_numpy_loop(self, alpha):
    rng = np.random.default_rng(int(alpha * 10))
    n, b = 12, 6
    batches = [(rng.integers(0, n, size=b).astype(np.int32),
                rng.exponential(size=b).astype(np.float32)) for _ in range(15)]
    update = self.variant(lambda s, i, l: W.update_tracker(s, i, l, ema=alpha))
    state = W.init_tracker(n)
    for ids, losses in batches:
      state = update(state, ids, losses)
    mean, var, count = _np_tracker(n, batches, alpha)
    np.testing.assert_allclose(state.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.var, var, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state.count, count)
    np.testing.assert_array_equal(state.seen, count > 0)

  def test_ema_variance_tracks_true_variance(self):
    # A stationary loss stream with variance 4: the EMA variance settles near 4 on average.
    rng = np.random.default_rng(0)
    state = W.init_tracker(1)
    vals = []
    update = jax.jit(lambda s, l: W.update_tracker(s, jnp.zeros(1, jnp.int32), l, ema=0.05))
    for t in range(3000):
      state = update(state, jnp.asarray([rng.normal(1.0, 2.0)], jnp.float32))
      if t > 500:
        vals.append(float(state.var[0]))
    self.assertAlmostEqual(np.mean(vals), 4.0, delta=0.4)

  def test_first_sighting_initializes(self):
    s = W.update_tracker(W.init_tracker(4), jnp.array([2]), jnp.array([5.0]))
    np.testing.assert_allclose(s.mean, [0, 0, 5, 0])
    np.testing.assert_allclose(s.var, 0.0)
    np.testing.assert_array_equal(s.count, [0, 0, 1, 0])

  def test_ids_closed_over_by_jit(self):
    # Constant ids captured by a jitted function are concrete arrays whose .min() is traced.
    ids = jnp.array([2, 0])
    update = jax.jit(lambda s, losses: W.update_tracker(s, ids, losses))
    s = update(W.init_tracker(3), jnp.array([5.0, 1.0]))
    np.testing.assert_allclose(s.mean, [1.0, 0.0, 5.0])
    np.testing.assert_array_equal(s.count, [1, 0, 1])

  def test_duplicates_average_and_count_once(self):
    s0 = W.update_tracker(W.init_tracker(3), jnp.array([1]), jnp.array([1.0]))
    dup = W.update_tracker(s0, jnp.array([1, 0, 1, 1]), jnp.array([2.0, 7.0, 6.0, 1.0]),
                           ema=0.5)
    rev = W.update_tracker(s0, jnp.array([1, 1, 0, 1]), jnp.array([1.0, 6.0, 7.0, 2.0]),
                           ema=0.5)
    # One update of id 1 with the average 3: delta 2, mean 2, var 0.5 * (0 + 0.5 * 4) = 1.
    np.testing.assert_allclose(dup.mean, [7.0, 2.0, 0.0])
    np.testing.assert_allclose(dup.var, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(dup.count, [1, 2, 0])
    chex.assert_trees_all_equal(dup, rev)

  def test_is_a_pytree(self):
    s = W.init_tracker(5)
    leaves = jax.tree_util.tree_leaves(s)
    self.assertLen(leaves, 3)
    s2 = jax.jit(lambda s: s)(s)
    chex.assert_trees_all_equal(s, s2)

  def test_bad_inputs(self):
    s = W.init_tracker(4)
    with self.assertRaisesRegex(TypeError, "ids must be an integer array"):
      W.update_tracker(s, jnp.array([0.0]), jnp.array([1.0]))
    with self.assertRaisesRegex(ValueError, r"ids must lie in \[0, 4\)"):
      W.update_tracker(s, jnp.array([4]), jnp.array([1.0]))
    with self.assertRaisesRegex(ValueError, "losses must have the shape of ids"):
      W.update_tracker(s, jnp.array([0, 1]), jnp.array([1.0]))
    with self.assertRaisesRegex(ValueError, "ema must be in"):
      W.update_tracker(s, jnp.array([0]), jnp.array([1.0]), ema=0.0)
    with self.assertRaisesRegex(TypeError, r"takes ema= \(renamed from alpha=\)"):
      W.update_tracker(s, jnp.array([0]), jnp.array([1.0]), alpha=0.5)
    with self.assertRaisesRegex(TypeError, "losses must be a floating-point"):
      W.update_tracker(s, jnp.array([0]), jnp.array([1]))
    with self.assertRaisesRegex(ValueError, "num_examples must be an int >= 1"):
      W.init_tracker(0)
    with self.assertRaisesRegex(TypeError, "state must be a TrackerState"):
      W.update_tracker((1, 2, 3), jnp.array([0]), jnp.array([1.0]))


class RadiiScheduleTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_radii_formula(self):
    v = np.random.default_rng(0).exponential(size=9).astype(np.float32)
    eps = self.variant(lambda v: W.radii(v, eps_min=0.2, eps_max=1.5))(v)
    np.testing.assert_allclose(eps, 0.2 + 1.3 * v / v.max(), rtol=1e-6)

  def test_radii_all_zero(self):
    eps = W.radii(jnp.zeros(4), eps_min=0.3, eps_max=2.0)
    np.testing.assert_allclose(eps, 0.3)
    self.assertTrue(np.all(np.isfinite(jax.grad(
        lambda v: jnp.sum(W.radii(v, eps_min=0.3, eps_max=2.0)))(jnp.zeros(4)))))

  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule(self):
    fn = self.variant(lambda t: W.eps_max_schedule(t, warmup_steps=10, ramp_steps=20,
                                                   eps_max=2.0))
    for t in [0, 5, 10, 11, 20, 29, 30, 31, 1000]:
      expected = 0.0 if t <= 10 else 2.0 * min(1.0, (t - 10) / 20)
      np.testing.assert_allclose(fn(jnp.asarray(t)), expected, rtol=1e-6, err_msg=str(t))
    jump = [float(W.eps_max_schedule(t, warmup_steps=3, ramp_steps=0, eps_max=1.0))
            for t in (0, 2, 3, 9)]
    self.assertEqual(jump, [0.0, 0.0, 1.0, 1.0])

  def test_var_dro_weights(self):
    rng = np.random.default_rng(5)
    losses = rng.exponential(size=16).astype(np.float32)
    var = rng.exponential(size=16).astype(np.float32)
    fn = jax.jit(lambda l, v, t: W.var_dro_weights(l, v, t, eps_min=0.1, eps_max=1.0,
                                                   warmup_steps=4, ramp_steps=4))
    # Warm-up: uniform.
    np.testing.assert_allclose(fn(losses, var, 2), np.full(16, 1 / 16), rtol=1e-6)
    # Mid-ramp (t=6): cap 0.5, floor 0.1; after the ramp: cap 1.0.
    for t, cap in [(6, 0.5), (100, 1.0)]:
      eps = 0.1 + (cap - 0.1) * var / var.max()
      q = fn(losses, var, t)
      ref = _linprog_weights(losses, eps)
      np.testing.assert_allclose(np.dot(q, losses), np.dot(ref, losses), atol=1e-6)
      _check_feasible(q, eps, 16)

  def test_tracked_weights(self):
    """The radii from the batch's own tracked variances ``var[ids]``; ``schedule='loss'`` caps
    them at eps_max * clip(1 - mean(tracked mean[ids]) / log K, 0, 1) (float64 reference)."""
    from drojax.objectives import tracked_weights

    rng = np.random.default_rng(7)
    n, ids = 10, np.array([7, 2, 9, 4, 0, 5])
    tracker = W.TrackerState(mean=rng.uniform(0.2, 1.0, n).astype(np.float32),
                             var=rng.exponential(size=n).astype(np.float32),
                             count=np.ones(n, np.int32))
    losses = rng.exponential(size=6).astype(np.float32)
    var, tracked = (np.asarray(a, np.float64)[ids] for a in (tracker.var, tracker.mean))
    for schedule, cap in (("ramp", 2.0),
                          ("loss", 2.0 * np.clip(1 - tracked.mean() / np.log(3), 0, 1))):
      q, got_cap = tracked_weights(tracker, ids, losses, 100, eps_min=0.1, eps_max=2.0,
                                   warmup_steps=4, ramp_steps=4, schedule=schedule,
                                   num_classes=3)
      np.testing.assert_allclose(got_cap, cap, rtol=1e-6)
      eps = 0.1 + (cap - 0.1) * var / var.max()
      ref = _linprog_weights(losses, eps)
      np.testing.assert_allclose(np.dot(q, losses), np.dot(ref, losses), atol=1e-6)
      _check_feasible(q, eps, 6)
    with self.assertRaisesRegex(ValueError, "schedule must be one of"):
      tracked_weights(tracker, ids, losses, 0, eps_min=0.0, eps_max=1.0, warmup_steps=0,
                      ramp_steps=0, schedule="los")
    # Under jit an id cannot be read: one outside the tracker (past its end, or negative,
    # which a gather would wrap) gives NaN weights, never another example's finite ones.
    on_device = W.TrackerState(*(jnp.asarray(a) for a in (tracker.mean, tracker.var,
                                                           tracker.count)))
    for schedule in ("ramp", "loss"):
      traced = jax.jit(lambda i, s=schedule: tracked_weights(
          on_device, i, losses, 100, eps_min=0.1, eps_max=2.0, warmup_steps=4, ramp_steps=4,
          schedule=s, num_classes=3)[0])
      self.assertTrue(np.isfinite(traced(ids)).all())
      for bad in (n, -1):
        self.assertTrue(np.isnan(traced(np.where(np.arange(6) == 1, bad, ids))).all())

  def test_infinite_eps_max(self):
    var = jnp.array([0.0, 1.0, 4.0, 4.0])
    np.testing.assert_array_equal(W.radii(var, eps_min=0.5, eps_max=np.inf),
                                  [0.5, np.inf, np.inf, np.inf])
    np.testing.assert_array_equal(W.radii(var, eps_min=np.inf, eps_max=np.inf), np.inf)
    sched = [float(W.eps_max_schedule(t, warmup_steps=2, ramp_steps=2, eps_max=np.inf))
             for t in (0, 2, 3, 9)]
    self.assertEqual(sched, [0.0, 0.0, np.inf, np.inf])
    losses = jnp.array([1.0, 2.0, 3.0, 0.5])
    fn = lambda t: W.var_dro_weights(losses, var, t, eps_min=0.0, eps_max=np.inf,  # noqa: E731
                                     warmup_steps=2, ramp_steps=2)
    np.testing.assert_allclose(fn(1), np.full(4, 0.25))  # warm-up: uniform, not NaN
    # After: variance 0 keeps radius 0 (weight 1/4), the rest is unbounded: all on loss 3.0.
    np.testing.assert_allclose(fn(9), [0.25, 0.0, 0.75, 0.0], atol=1e-7)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "eps_max must be >= eps_min"):
      W.radii(jnp.ones(3), eps_min=1.0, eps_max=0.5)
    with self.assertRaisesRegex(ValueError, "eps_min must be >= 0"):
      W.radii(jnp.ones(3), eps_min=-1.0, eps_max=0.5)
    with self.assertRaisesRegex(ValueError, "variances must have rank 1"):
      W.radii(jnp.ones((3, 1)), eps_min=0.0, eps_max=0.5)
    with self.assertRaisesRegex(ValueError, "warmup_steps must be >= 0"):
      W.eps_max_schedule(0, warmup_steps=-1, ramp_steps=2, eps_max=1.0)
    with self.assertRaisesRegex(ValueError, "eps_max must be >= 0"):
      W.eps_max_schedule(0, warmup_steps=1, ramp_steps=2, eps_max=-1.0)
    with self.assertRaisesRegex(ValueError, "variances must have the shape of losses"):
      W.var_dro_weights(jnp.ones(3), jnp.ones(2), 0, eps_min=0.0, eps_max=1.0, warmup_steps=0,
                        ramp_steps=0)


if __name__ == "__main__":
  pytest.main([__file__])
