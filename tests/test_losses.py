"""Tests for drojax.losses: the per-example losses ([B] in, [B] out) against float64 NumPy
transcriptions of their papers' formulas (cross-entropy, AugMix's JSD, TRADES' KL, MART), their
parameter gradients by finite differences, and the deprecated aliases of the old names."""

import warnings

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

from _loss_helpers import _np_log_softmax


class CrossEntropyTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.1)
  def test_matches_numpy(self, smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=6).astype(np.int32)
    probs = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
    fn = self.variant(lambda z, y: L.cross_entropy(z, y, label_smoothing=smoothing))
    logp = _np_log_softmax(logits)
    onehot = np.eye(5)[labels]
    for y, t in [(labels, onehot), (probs, probs.astype(np.float64))]:
      t = (1 - smoothing) * t + smoothing / 5
      np.testing.assert_allclose(fn(logits, y), -(t * logp).sum(-1), rtol=1e-5)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "logits must have rank 2"):
      L.cross_entropy(jnp.ones(3), jnp.array([0, 1, 2]))
    with self.assertRaisesRegex(ValueError, r"labels must have shape \[B\]"):
      L.cross_entropy(jnp.ones((3, 2)), jnp.array([0, 1]))
    with self.assertRaisesRegex(ValueError, "probability labels must have the shape of logits"):
      L.cross_entropy(jnp.ones((3, 2)), jnp.ones((3, 3)))
    with self.assertRaisesRegex(TypeError, "logits must be a floating-point array"):
      L.cross_entropy(jnp.ones((3, 2), jnp.int32), jnp.array([0, 1, 1]))
    with self.assertRaisesRegex(ValueError, "label_smoothing must be in"):
      L.cross_entropy(jnp.ones((3, 2)), jnp.array([0, 1, 1]), label_smoothing=1.5)

  def test_out_of_range_labels(self):
    logits = jnp.zeros((3, 4))
    for bad in ([0, 4, 1], [0, -1, 1]):
      with self.assertRaisesRegex(ValueError, r"labels \(class ids for 4 classes\) must lie in \[0, 4\)"):
        L.cross_entropy(logits, jnp.array(bad))
    # Under jit the ids cannot be checked: the row is NaN, never a finite wrong value.
    got = np.asarray(jax.jit(L.cross_entropy)(logits, jnp.array([0, 4, -1])))
    np.testing.assert_allclose(got[0], np.log(4.0), rtol=1e-6)
    self.assertTrue(np.isnan(got[1]) and np.isnan(got[2]), got)


class JSDTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jsd_vs_numpy(self):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(3, 6, 5)) * 12).astype(np.float32)  # peaked: exercises the clamp
    got = self.variant(L.jsd_consistency)(z)
    p = np.exp(_np_log_softmax(z))
    m = np.clip(p.mean(0), 1e-7, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
      kl = np.where(p > 0, p * (np.log(p) - np.log(m)[None]), 0.0).sum(-1)
    np.testing.assert_allclose(got, kl.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(L.jsd_consistency(list(z)), got, rtol=1e-6)
    self.assertEqual(got.shape, (6,))

  @hypothesis.given(seed=st.integers(0, 2**31 - 1), views=st.sampled_from([2, 3]),
                    scale=st.sampled_from([0.1, 1.0, 20.0]))
  def test_jsd_nonnegative_and_zero_for_equal_views(self, seed, views, scale):
    z = (np.random.default_rng(seed).normal(size=(views, 4, 3)) * scale).astype(np.float32)
    self.assertTrue(np.all(np.asarray(L.jsd_consistency(z)) >= -1e-7))
    same = np.broadcast_to(z[:1], z.shape)
    np.testing.assert_allclose(L.jsd_consistency(same), 0.0, atol=1e-6)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "V >= 2"):
      L.jsd_consistency(jnp.ones((1, 3, 2)))
    with self.assertRaisesRegex(ValueError, "V >= 2"):
      L.jsd_consistency([jnp.ones((3, 2))])
    with self.assertRaisesRegex(ValueError, "logits_views must have rank 3"):
      L.jsd_consistency(jnp.ones((3, 2)))
    with self.assertRaisesRegex(ValueError, "same"):
      L.jsd_consistency([jnp.ones((3, 2)), jnp.ones((2, 2))])


def _np_softmax(z):
  return np.exp(_np_log_softmax(z))


def _np_trades_kl(zc, za):
  """KL(p_clean || p_adv) per row, float64 (TRADES: KLDivLoss(log_softmax(adv), softmax(clean)))."""
  p, lq = _np_softmax(zc), _np_log_softmax(za)
  return (p * (_np_log_softmax(zc) - lq)).sum(-1)


def _np_mart(zc, za, y, beta):
  """MART's per-example loss in float64, transcribed from the paper / official mart_loss."""
  zc, za = np.asarray(zc, np.float64), np.asarray(za, np.float64)
  adv_probs = _np_softmax(za)
  order = np.argsort(adv_probs, axis=1)[:, -2:]
  new_y = np.where(order[:, -1] == y, order[:, -2], order[:, -1])
  rows = np.arange(len(y))
  ce = -_np_log_softmax(za)[rows, y]
  bce = ce - np.log(1.0001 - adv_probs[rows, new_y] + 1e-12)
  nat = _np_softmax(zc)
  kl = (nat * (np.log(nat) - np.log(adv_probs + 1e-12))).sum(1)
  return bce + beta * kl * (1.0000001 - nat[rows, y])


class AdversarialLossesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_trades_kl_vs_numpy_nonnegative_and_zero_when_equal(self):
    rng = np.random.default_rng(0)
    zc = (rng.normal(size=(7, 5)) * 3).astype(np.float32)
    za = (rng.normal(size=(7, 5)) * 3).astype(np.float32)
    fn = self.variant(L.trades_kl)
    got = np.asarray(fn(zc, za))
    np.testing.assert_allclose(got, _np_trades_kl(zc, za), rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(got >= 0))
    np.testing.assert_allclose(fn(zc, zc), 0.0, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 6.0)
  def test_mart_vs_numpy(self, beta):
    rng = np.random.default_rng(1)
    zc = (rng.normal(size=(16, 4)) * 2).astype(np.float32)
    za = (rng.normal(size=(16, 4)) * 2).astype(np.float32)
    y = rng.integers(0, 4, 16)
    za[0] = za[0] + 10.0 * np.eye(4)[y[0]]  # the true class on top: the wrong class is 2nd
    got = self.variant(lambda a, b, c: L.mart_loss(a, b, c, beta=beta))(zc, za, y)
    np.testing.assert_allclose(got, _np_mart(zc, za, y, beta), rtol=2e-5, atol=1e-6)

  def test_gradients_vs_finite_differences(self):
    rng = np.random.default_rng(2)
    zc = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    za = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    y = jnp.asarray([0, 2, 3])
    check_grads(lambda a, b: jnp.sum(L.trades_kl(a, b)), (zc, za), order=1, modes=["rev"],
                atol=1e-2, rtol=1e-2)
    check_grads(lambda a, b: jnp.sum(L.mart_loss(a, b, y, beta=6.0)), (zc, za), order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "same"):
      L.trades_kl(jnp.ones((3, 2)), jnp.ones((3, 3)))
    with self.assertRaisesRegex(ValueError, "beta must be >= 0"):
      L.mart_loss(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.array([0, 1, 0]), beta=-1.0)
    with self.assertRaisesRegex(ValueError, "labels must be"):
      L.mart_loss(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(3), beta=1.0)


def test_old_names_are_deprecated_aliases():
  from drojax import objectives, wdro
  x, y = jnp.ones((2, 3)), jnp.array([[0.2, 0.8], [0.5, 0.5]])
  w = jnp.array([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]])
  fn = lambda x_, y_: L.cross_entropy(x_ @ w, y_)
  pairs = [("PENALTY_MODES", wdro.PENALTY_MODES), ("DEFAULT_FD_STEP", wdro.DEFAULT_FD_STEP),
           ("WDROAux", wdro.WDROAux), ("input_gradients", wdro.input_gradients),
           ("kl_dro_loss", objectives.kl_dro_risk), ("cvar_loss", objectives.cvar_risk)]
  for name, new in pairs:
    with pytest.warns(DeprecationWarning, match=f"drojax.losses.{name} is deprecated"):
      assert getattr(L, name) is new
  with pytest.warns(DeprecationWarning, match="wdro_total"):
    old = L.wdro_loss
  # The old defaults (q 2, exact) and option names (mode, subsample, key last) still hold.
  got = old(fn, x, y, rho=0.5)[0]
  want = wdro.wdro_total(None, fn, x, y, rho=0.5, q=2.0, penalty_mode="exact")[0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  with pytest.warns(DeprecationWarning):
    g = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(L.variation_penalty(g), np.sqrt(12.5), rtol=1e-6)  # q 2
  with pytest.raises(AttributeError):
    L.no_such_name  # noqa: B018
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    from drojax.losses import cross_entropy  # noqa: F401  (current names do not warn)
