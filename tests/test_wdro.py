"""Tests for drojax.wdro: input gradients, the variation penalty vs float64 NumPy, the W-DRO
total's value and parameter gradient (finite differences), its gradient modes against the exact
one, subsampling, and 4 sharded devices vs 1 (a subprocess)."""

import itertools
import math
import os
import subprocess
import sys
import textwrap

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from drojax import losses as L
from drojax import _wdro_modes as _modes
from drojax import wdro as W

from _loss_helpers import (NORMS, Q_VALUES, _ce_loss_fn, _conv, _conv_params, _cos, _mlp,
                           _mlp_data, _mlp_params, _np_dual_norms, _np_log_softmax, _np_penalty)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wdro(loss_fn, x, *args, key=None, mode="exact", subsample=1.0, q=2.0, **kw):
  """``W.wdro_total`` with the options these tests were written for (exact, q 2)."""
  return W.wdro_total(key, loss_fn, x, *args, penalty_mode=mode, penalty_subsample=subsample,
                      q=q, **kw)


def _penalty(g, *, q=2.0, **kw):
  return W.variation_penalty(g, q=q, **kw)


class InputGradientsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_per_example_gradients(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    fn = self.variant(lambda x, y: W.input_gradients(_ce_loss_fn(_mlp, params), x, y))
    g = fn(x, y)
    self.assertEqual(g.shape, x.shape)
    # Independent: per-example jax.grad of the single example's scalar loss, vmapped.
    per_ex = jax.jit(jax.vmap(jax.grad(
        lambda xi, yi: L.cross_entropy(_mlp(params, xi[None]), yi[None])[0])))(x, y)
    np.testing.assert_allclose(g, per_ex, rtol=1e-5, atol=1e-7)

  def test_has_aux_and_central_differences(self):
    with jax.enable_x64(True):
      x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)))

      def loss_fn(x):
        return jnp.sin(x[:, 0]) * x[:, 1] ** 2, {"aux": jnp.sum(x)}

      g, aux = W.input_gradients(loss_fn, x, has_aux=True)
      np.testing.assert_allclose(aux["aux"], np.sum(x))
      h = 1e-6
      for j in range(2):
        e = np.zeros((3, 2))
        e[:, j] = h
        fd = (loss_fn(x + e)[0] - loss_fn(x - e)[0]) / (2 * h)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-7)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, "x must be a floating-point array"):
      W.input_gradients(lambda x: x, jnp.ones(3, jnp.int32))
    with self.assertRaisesRegex(ValueError, r"args\[0\] must be batched along axis 0"):
      W.input_gradients(lambda x, y: x[:, 0] * y[:, 0], jnp.ones((3, 2)), jnp.ones((2, 2)))
    with self.assertRaisesRegex(ValueError, r"loss_fn must return per-example losses of shape"):
      W.input_gradients(lambda x: jnp.sum(x), jnp.ones((3, 2)))


class VariationPenaltyTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy(self):
    g = np.random.default_rng(0).normal(size=(5, 2, 3, 2)).astype(np.float32)
    g[1] = 0.0
    for q, norm in itertools.product(Q_VALUES, NORMS):
      fn = self.variant(lambda g, q=q, norm=norm: _penalty(g, q=q, norm=norm))
      np.testing.assert_allclose(fn(g), _np_penalty(g, q, norm), rtol=1e-5,
                                 err_msg=f"q={q} norm={norm}")

  def test_gradient_vs_finite_differences(self):
    with jax.enable_x64(True):
      g = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
      for q, norm in [(1.0, "l2"), (2.0, "l2"), (3.0, "linf"), (2.0, "l3"), (math.inf, "l2")]:
        check_grads(lambda g, q=q, norm=norm: _penalty(g, q=q, norm=norm), (g,),
                    order=1, modes=["rev"], eps=1e-6)

  def test_gradient_finite_at_zero(self):
    g = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32).at[0].set(0.0)
    for q, norm in itertools.product(Q_VALUES, NORMS):
      for grads in (g, jnp.zeros_like(g)):
        d = jax.grad(lambda g: _penalty(g, q=q, norm=norm))(grads)
        self.assertTrue(np.all(np.isfinite(d)), f"q={q} norm={norm}")
      # A zero row beside non-zero ones gets a zero (sub)gradient.
      d = jax.grad(lambda g: _penalty(g, q=q, norm=norm))(g)
      np.testing.assert_array_equal(d[0], 0.0)

  @parameterized.parameters(*Q_VALUES)
  def test_axis_name_matches_global_batch(self, q):
    g = jnp.asarray(np.random.default_rng(3).normal(size=(8, 3)), jnp.float32)
    full = _penalty(g, q=q)
    split = jax.vmap(lambda gl: _penalty(gl, q=q, axis_name="d"), axis_name="d")(
        g.reshape(4, 2, 3))
    np.testing.assert_allclose(split, np.full(4, full), rtol=1e-6)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, r"q must be in \[1, inf\]"):
      _penalty(jnp.ones((2, 2)), q=0.5)
    for bad in ("l0.5", "L2", "nan"):
      with self.assertRaisesRegex(ValueError, r"norm must be 'l1', 'l2', 'linf' or 'l<p>' with "):
        _penalty(jnp.ones((2, 2)), norm=bad)
    for old, new in ((2.0, "'l2'"), (math.inf, "'linf'"), (1, "'l1'"), ("3", "'l3'")):  # the float p: renamed
      with self.assertRaisesRegex(TypeError, f"norm takes a string now .*write norm={new}"):
        _penalty(jnp.ones((2, 2)), norm=old)
    with self.assertRaisesRegex(TypeError, "q must be a Python number"):
      _penalty(jnp.ones((2, 2)), q=jnp.array(2.0))
    with self.assertRaisesRegex(TypeError, "grads must be a floating-point array"):
      _penalty(jnp.ones((2, 2), jnp.int32))
    with self.assertRaisesRegex(ValueError, "grads must have rank >= 1"):
      _penalty(jnp.float32(1.0))


class WDROLossTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_matches_independent_reference(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    fn = self.variant(lambda x, y: _wdro(_ce_loss_fn(_mlp, params), x, y, rho=0.3, q=2.0,
                                               norm="linf"))
    total, aux = fn(x, y)
    logits = np.asarray(_mlp(params, x), np.float64)
    ce = -(np.asarray(y) * _np_log_softmax(logits)).sum(-1)
    per_ex = jax.vmap(jax.grad(
        lambda xi, yi: L.cross_entropy(_mlp(params, xi[None]), yi[None])[0]))(x, y)
    pen = _np_penalty(per_ex, 2.0, "linf")
    np.testing.assert_allclose(aux.losses, ce, rtol=1e-5)
    np.testing.assert_allclose(aux.mean_loss, ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux.penalty, pen, rtol=1e-5)
    np.testing.assert_allclose(total, ce.mean() + 0.3 * pen, rtol=1e-5)
    self.assertIsNone(aux.fn_aux)

  @parameterized.parameters((2.0, "l2"), (1.0, "linf"), (math.inf, "l2"))
  def test_parameter_gradient_vs_finite_differences(self, q, norm):
    with jax.enable_x64(True):
      params = _mlp_params(jax.random.key(0), d=5, h=4, k=3, dtype=jnp.float64)
      x, y = _mlp_data(jax.random.key(1), b=4, d=5, k=3, dtype=jnp.float64)

      def total(p):
        return _wdro(_ce_loss_fn(_mlp, p), x, y, rho=0.7, q=q, norm=norm)[0]

      check_grads(jax.jit(total), (params,), order=1, modes=["rev"], eps=1e-6)

  def test_parameter_gradient_changes_with_rho(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    grad = jax.jit(jax.grad(lambda p, rho: _wdro(_ce_loss_fn(_mlp, p), x, y, rho=rho)[0]))
    g0, g1, g2 = (grad(params, jnp.float32(r)) for r in (0.0, 1.0, 2.0))
    erm = jax.grad(lambda p: jnp.mean(_ce_loss_fn(_mlp, p)(x, y)))(params)
    chex.assert_trees_all_close(g0, erm, rtol=1e-5, atol=1e-7)
    diff = jax.tree_util.tree_map(lambda a, b: a - b, g1, g0)
    size = np.sqrt(sum(float(jnp.sum(d ** 2)) for d in jax.tree_util.tree_leaves(diff)))
    self.assertGreater(size, 1e-3)
    # Affine in rho: g(2) - g(0) = 2 (g(1) - g(0)).
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, b: a - b, g2, g0),
                                jax.tree_util.tree_map(lambda d: 2 * d, diff), rtol=1e-4,
                                atol=1e-6)

  @parameterized.parameters("exact", "finite_difference")
  def test_finite_when_some_input_gradients_are_zero(self, mode):
    params = _mlp_params(jax.random.key(0))
    params["b1"] = jnp.zeros_like(params["b1"])
    x, _ = _mlp_data(jax.random.key(1))

    def loss_fn(p):
      return lambda x: jnp.sum(_mlp(p, x), axis=1) ** 2  # g_i = 0 exactly at x_i = 0

    for q, norm in [(1.0, "l2"), (2.0, "linf"), (math.inf, "l2")]:
      grad = jax.jit(jax.grad(lambda p, xs: _wdro(loss_fn(p), xs, rho=1.0, q=q, norm=norm,
                                                        mode=mode)[0]))
      for xs in (x.at[0].set(0.0), jnp.zeros_like(x)):
        for leaf in jax.tree_util.tree_leaves(grad(params, xs)):
          self.assertTrue(np.all(np.isfinite(leaf)), f"{mode} q={q} norm={norm}")

  def test_has_aux_returns_unperturbed_aux(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))

    def loss_fn(x, y):
      return L.cross_entropy(_mlp(params, x), y), {"batch_mean": jnp.mean(x, axis=0)}

    for mode in W.PENALTY_MODES:
      _, aux = _wdro(loss_fn, x, y, rho=1.0, has_aux=True, mode=mode, fd_step=0.5)
      np.testing.assert_allclose(aux.fn_aux["batch_mean"], np.mean(x, axis=0), rtol=1e-6)

  def test_bad_inputs(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    f = _ce_loss_fn(_mlp, params)
    with self.assertRaisesRegex(ValueError, "rho must be >= 0"):
      _wdro(f, x, y, rho=-0.1)
    with self.assertRaisesRegex(ValueError,
                                r"mode must be one of \('exact', 'forward_over_reverse', "
                                r"'finite_difference'\)"):
      _wdro(f, x, y, rho=1.0, mode="fast")
    with self.assertRaisesRegex(ValueError, "subsample must be a Python float in"):
      _wdro(f, x, y, rho=1.0, subsample=0.0)
    with self.assertRaisesRegex(ValueError, "key is required when penalty_subsample < 1"):
      _wdro(f, x, y, rho=1.0, subsample=0.5)
    with self.assertRaisesRegex(ValueError, "fd_step must be a positive"):
      _wdro(f, x, y, rho=1.0, mode="finite_difference", fd_step=0.0)
    with self.assertRaisesRegex(TypeError, "x must be a floating-point array"):
      _wdro(f, jnp.ones((8, 12), jnp.int32), y, rho=1.0)
    with self.assertRaisesRegex(ValueError, r"args\[0\] must be batched along axis 0"):
      _wdro(f, x, y[:4], rho=1.0)
    with self.assertRaisesRegex(ValueError, "x must have rank >= 1"):
      _wdro(lambda x: x, jnp.float32(1.0), rho=1.0)


class PenaltyModesTest(parameterized.TestCase):
  """Issue 7's cheaper penalty gradients, against the exact grad of grad."""

  def _grads(self, model, params, x, y, **kw):
    """Parameter gradients of (total, penalty term), and (total, penalty), in one jit."""
    def terms(p):
      t, aux = _wdro(_ce_loss_fn(model, p), x, y, rho=1.0, **kw)
      return (t, t - aux.mean_loss), (t, aux.penalty, aux.mean_loss)

    (g_total, g_pen), values = jax.jit(jax.jacrev(terms, has_aux=True))(params)
    return g_total, g_pen, values

  @staticmethod
  def _setup(model_name):
    """``(model, params, x, y)``: the tanh MLP on soft targets or the ReLU conv on labels."""
    if model_name == "mlp":
      return (_mlp, _mlp_params(jax.random.key(0))) + _mlp_data(jax.random.key(1))
    return (_conv, _conv_params(jax.random.key(0)),
            jax.random.uniform(jax.random.key(1), (8, 8, 8, 3)),
            jax.random.randint(jax.random.key(2), (8,), 0, 4))

  @parameterized.parameters(("mlp", 2.0, "l2"), ("conv", 1.0, "linf"))
  def test_finite_difference_close_to_exact(self, model_name, q, norm):
    model, params, x, y = self._setup(model_name)
    ex_total, ex_pen, ex_values = self._grads(model, params, x, y, q=q, norm=norm)
    fd_total, fd_pen, fd_values = self._grads(model, params, x, y, q=q, norm=norm,
                                              mode="finite_difference")
    self.assertGreaterEqual(_cos(ex_pen, fd_pen), 0.99)
    self.assertGreaterEqual(_cos(ex_total, fd_total), 0.99)
    # Same value (total and penalty) in both modes.
    np.testing.assert_allclose(fd_values, ex_values, rtol=1e-6)

  def test_subsample_one_equals_full(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    f = _ce_loss_fn(_mlp, params)
    full = _wdro(f, x, y, rho=0.5)
    one = _wdro(f, x, y, rho=0.5, subsample=1.0)
    chex.assert_trees_all_close(full, one)
    # A fraction that rounds to the whole batch draws a permutation of it: same penalty.
    perm = jax.jit(lambda x, y, k: _wdro(f, x, y, rho=0.5, subsample=0.99, key=k))(
        x, y, jax.random.key(3))
    np.testing.assert_allclose(perm[0], full[0], rtol=1e-5)
    np.testing.assert_allclose(perm[1].penalty, full[1].penalty, rtol=1e-5)

  def test_subsample_unbiased_for_q1(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    f = _ce_loss_fn(_mlp, params)
    full = _wdro(f, x, y, rho=1.0, q=1.0)[1].penalty
    keys = jax.random.split(jax.random.key(7), 4000)
    est = jax.jit(jax.vmap(lambda k: _wdro(f, x, y, rho=1.0, q=1.0, subsample=0.25,
                                                 key=k)[1]))(keys)
    pens = np.asarray(est.penalty, np.float64)
    np.testing.assert_allclose(est.mean_loss, np.full(4000, np.mean(f(x, y))), rtol=1e-6)
    se = pens.std() / np.sqrt(len(pens))
    self.assertGreater(pens.std(), 0.0)  # the subsets really differ
    self.assertLess(abs(pens.mean() - float(full)), 4 * se)
    # Every value is the mean norm of m = 2 of the 8 examples.
    g = W.input_gradients(f, x, y)
    norms = np.linalg.norm(np.asarray(g, np.float64), axis=1)
    pairs = {round((norms[i] + norms[j]) / 2, 4) for i in range(8) for j in range(i + 1, 8)}
    self.assertTrue(set(np.round(pens, 4)) <= pairs)

  def test_subsample_composes_with_finite_difference(self):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    key = jax.random.key(5)
    _, ex_pen, ex_values = self._grads(_mlp, params, x, y, subsample=0.5, key=key)
    _, fd_pen, fd_values = self._grads(_mlp, params, x, y, subsample=0.5, key=key,
                                       mode="finite_difference")
    self.assertGreaterEqual(_cos(ex_pen, fd_pen), 0.99)
    np.testing.assert_allclose(fd_values, ex_values, rtol=1e-6)
    # The subsampled penalty differs from the full one; the loss mean does not.
    f = _ce_loss_fn(_mlp, params)
    np.testing.assert_allclose(ex_values[2], jnp.mean(f(x, y)), rtol=1e-6)
    full_penalty = _penalty(W.input_gradients(f, x, y))
    self.assertNotAlmostEqual(float(ex_values[1]), float(full_penalty), places=5)

  @parameterized.parameters(("mlp", 2.0, "l2", 1.0), ("conv", 1.0, "linf", 1.0),
                            ("mlp", 1.0, "l2", 0.5))
  def test_forward_over_reverse_equals_exact(self, model_name, q, norm, subsample):
    model, params, x, y = self._setup(model_name)
    kw = dict(q=q, norm=norm, subsample=subsample, key=jax.random.key(4))
    ex = self._grads(model, params, x, y, **kw)
    fr = self._grads(model, params, x, y, mode="forward_over_reverse", **kw)
    # Exact both ways: the same gradients up to float32 rounding.
    chex.assert_trees_all_close(fr, ex, rtol=2e-4, atol=1e-6)

  @hypothesis.settings(max_examples=12, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([2, 5]),
                    q=st.sampled_from([1.0, 2.0, math.inf]),
                    norm=st.sampled_from(["l1", "l2", "linf"]),
                    rho=st.floats(0.0, 3.0))
  def test_forward_over_reverse_property(self, seed, b, q, norm, rho):
    # Any batch, exponent, ground norm and weight: the jvp form is the grad-of-grad gradient
    # (parameters and inputs together).
    kp, kd = jax.random.split(jax.random.key(seed))
    params = _mlp_params(kp)
    x, y = _mlp_data(kd, b=b)

    def grads(mode):
      def total(p, x_):
        return _wdro(_ce_loss_fn(_mlp, p), x_, y, rho=rho, q=q, norm=norm, mode=mode)[0]
      return jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(params, x)

    chex.assert_trees_all_close(grads("forward_over_reverse"), grads("exact"), rtol=2e-4,
                                atol=2e-6)

  @parameterized.parameters("forward_over_reverse", "finite_difference")
  def test_input_and_target_gradients_match_exact(self, mode):
    params = _mlp_params(jax.random.key(0))
    x, t = _mlp_data(jax.random.key(1))  # t: soft targets, a float argument to differentiate

    def total(x, t, mode):
      fn = lambda x_, t_: -jnp.sum(t_ * jax.nn.log_softmax(_mlp(params, x_)), -1)
      return _wdro(fn, x, t, rho=0.8, mode=mode)[0]

    ex = jax.grad(total, argnums=(0, 1))(x, t, "exact")
    got = jax.jit(jax.grad(total, argnums=(0, 1)), static_argnums=2)(x, t, mode)
    for a, b in zip(got, ex):
      self.assertGreaterEqual(_cos(a, b), 0.99 if mode == "finite_difference" else 0.99999)

  @chex.variants(with_jit=True, without_jit=True)
  def test_shared_finite_difference_equals_the_surrogate(self):
    # The one-device custom_vjp and the surrogate form (used on a mesh axis of size > 1)
    # compute the same estimate: same h, same direction, same difference quotient.
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))

    def shared(p):
      return _wdro(_ce_loss_fn(_mlp, p), x, y, rho=0.6, mode="finite_difference")[0]

    def surrogate(p):
      f = _ce_loss_fn(_mlp, p)
      losses, vjp_fn = jax.vjp(lambda x_: f(x_, y), x)
      (g,) = vjp_fn(jnp.ones_like(losses))
      _, term = _modes.finite_difference_surrogate(
          f, x, (y,), losses, g, q=2.0, p=2.0, has_aux=False, axis_name=None,
          fd_step=W.DEFAULT_FD_STEP)
      return jnp.mean(losses) + 0.6 * term

    got = self.variant(jax.value_and_grad(shared))(params)
    want = jax.value_and_grad(surrogate)(params)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    self.assertGreaterEqual(_cos(got[1], want[1]), 0.9999)

  @parameterized.parameters("forward_over_reverse", "finite_difference")
  def test_named_vmap_axis_uses_the_fallback_forms(self, mode):
    # A named axis outside shard_map (size 2 here) keeps grad of grad / the surrogate: values
    # match one device, and the gradient is computed (JAX transposes a named vmap's psum to a
    # sum of cotangents, so only values are compared, as for variation_penalty).
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1), b=8)

    def per_device(p, xx, yy):
      return _wdro(_ce_loss_fn(_mlp, p), xx, yy, rho=0.7, mode=mode, axis_name="d")[0]

    def mean_total(p):
      return jnp.mean(jax.vmap(per_device, in_axes=(None, 0, 0), axis_name="d")(
          p, x.reshape(2, 4, -1), y.reshape(2, 4, -1)))

    value, grads = jax.jit(jax.value_and_grad(mean_total))(params)
    np.testing.assert_allclose(value, _wdro(_ce_loss_fn(_mlp, params), x, y, rho=0.7)[0],
                               rtol=1e-5)
    self.assertTrue(all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)))

  @parameterized.parameters("forward_over_reverse", "finite_difference")
  def test_losses_differentiable_fn_aux_not(self, mode):
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1))
    c = jax.random.normal(jax.random.key(2), (8,))

    def weighted(p, mode):
      f = lambda x_, y_: (lambda l: (l, {"logits_sum": jnp.sum(_mlp(p, x_))}))(
          _ce_loss_fn(_mlp, p)(x_, y_))
      t, aux = _wdro(f, x, y, rho=0.5, has_aux=True, mode=mode)
      return t + jnp.dot(c, aux.losses) + 3.0 * aux.mean_loss, aux.fn_aux["logits_sum"]

    ex = jax.grad(lambda p: weighted(p, "exact")[0])(params)
    got = jax.grad(lambda p: weighted(p, mode)[0])(params)
    self.assertGreaterEqual(_cos(got, ex), 0.99)
    with self.assertRaisesRegex(ValueError, "fn_aux"):
      jax.grad(lambda p: weighted(p, mode)[1])(params)


_SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import math
    import jax, jax.numpy as jnp, numpy as np
    from jax import shard_map
    from jax.sharding import PartitionSpec as P
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    from drojax import wdro as W
    from _loss_helpers import _mlp, _mlp_params, _mlp_data, _ce_loss_fn, _cos
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    params = _mlp_params(jax.random.key(0))
    x, y = _mlp_data(jax.random.key(1), b=8)
    def close(a, b):
      for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=2e-4, atol=1e-6)

    def sharded(q, mode, weighted=False, subsample=1.0):
      def local(p, x, y):
        t, aux = W.wdro_total(jax.random.key(3), _ce_loss_fn(_mlp, p), x, y, rho=0.7, q=q,
                              penalty_mode=mode, axis_name="data", penalty_subsample=subsample)
        if weighted:  # a cotangent that differs per device (not the train step's pmean)
          return jax.lax.psum(t * (1.0 + jax.lax.axis_index("data")), "data")
        return jax.lax.pmean(t, "data")
      return jax.jit(shard_map(jax.value_and_grad(local, argnums=(0, 1)), mesh=mesh,
                               in_specs=(P(), P("data"), P("data")),
                               out_specs=(P(), (P(), P("data")))))(params, x, y)

    def one_device(q, mode):
      return jax.value_and_grad(lambda p, x_: W.wdro_total(
          None, _ce_loss_fn(_mlp, p), x_, y, rho=0.7, q=q, penalty_mode=mode)[0],
          argnums=(0, 1))(params, x)

    for q in (2.0, math.inf):
      exact = one_device(q, "exact")
      close(sharded(q, "exact"), exact)  # 4 devices give the global-batch gradient
      close(sharded(q, "forward_over_reverse"), exact)
    # The finite difference takes one direction and step for the global batch: 4 devices give
    # the one-device estimate.
    close(sharded(2.0, "finite_difference"), one_device(2.0, "finite_difference"))
    for mode in ("forward_over_reverse", "finite_difference"):
      got, want = sharded(2.0, mode, weighted=True), sharded(2.0, "exact", weighted=True)
      if mode == "forward_over_reverse":
        close(got, want)
      else:
        assert _cos(got[1], want[1]) > 0.99, _cos(got[1], want[1])
    close(sharded(1.0, "forward_over_reverse", subsample=0.5),
          sharded(1.0, "exact", subsample=0.5))
    print("OK")
""")


class ShardedTest(parameterized.TestCase):

  def test_four_devices_equal_one(self):
    # A fresh process: the forced device count must be set before JAX starts.
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, REPO], capture_output=True,
                         text=True, env=env, timeout=300)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("OK", out.stdout)
