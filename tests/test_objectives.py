"""Tests for drojax.objectives: the scalar risks (KL-DRO, CVaR) vs NumPy, and the adversarial
objectives (pgd_at, trades, mart) on a linear softmax model: the closed-form L-inf worst case,
the eps-ball, TRADES beta 0 == ERM, the KL term, and parameter gradients vs finite differences
with the adversarial example held fixed. (Var-DRO / W-DRO objectives: tests/test_methods.py.)"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from drojax import losses as L
from drojax import objectives as O
from drojax import views


class RisksTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_dro(self):
    losses = np.array([0.5, 3.0, 1.0, 2.0], np.float32)
    fn = self.variant(lambda l, t: O.kl_dro_risk(l, temperature=t))
    for t in [0.7, 2.0]:
      ref = t * np.log(np.mean(np.exp(losses.astype(np.float64) / t)))
      np.testing.assert_allclose(fn(losses, t), ref, rtol=1e-6)
    np.testing.assert_allclose(fn(losses, 1e4), losses.mean(), rtol=1e-3)
    np.testing.assert_allclose(fn(losses, 1e-3), losses.max(), atol=2e-3)
    big = fn(losses + 1000.0, 0.01)  # exp(1e5) would overflow without logsumexp
    self.assertTrue(np.isfinite(big))
    np.testing.assert_allclose(big, 1003.0, atol=0.02)
    # Gradient: softmax weights.
    g = jax.grad(lambda l: O.kl_dro_risk(l, temperature=2.0))(jnp.asarray(losses))
    w = np.exp(losses / 2.0)
    np.testing.assert_allclose(g, w / w.sum(), rtol=1e-5)

  @hypothesis.given(seed=st.integers(0, 2**31 - 1),
                    alpha=st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.999, 1.0]))
  def test_cvar_vs_sorting(self, seed, alpha):
    losses = np.random.default_rng(seed).normal(size=10).astype(np.float32)
    k = {0.05: 1, 0.1: 1, 0.25: 3, 0.3: 3, 0.5: 5, 0.7: 7, 0.999: 10, 1.0: 10}[alpha]
    ref = np.sort(losses.astype(np.float64))[::-1][:k].mean()
    np.testing.assert_allclose(O.cvar_risk(losses, alpha=alpha), ref, rtol=1e-6, atol=1e-7)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
      O.kl_dro_risk(jnp.ones(3), temperature=0.0)
    with self.assertRaisesRegex(ValueError, "losses must have rank 1"):
      O.kl_dro_risk(jnp.ones((3, 1)), temperature=1.0)
    with self.assertRaisesRegex(TypeError, "losses must be a floating-point array"):
      O.kl_dro_risk(jnp.ones(3, jnp.int32), temperature=1.0)
    for alpha in (0.0, -0.5, 1.5):
      with self.assertRaisesRegex(ValueError, r"alpha must be in \(0, 1\]"):
        O.cvar_risk(jnp.ones(3), alpha=alpha)


# ----------------------------------------------------------------------------------------------
# Adversarial objectives on a linear softmax model (no BatchNorm: train and eval modes agree).

B, H, W, C, K = 6, 2, 2, 1, 3
D = H * W * C
CTX = O.ObjectiveContext(step=jnp.zeros((), jnp.int32), ids=jnp.arange(B), axis_name=None)


def _fns(weight, bias=None):
  bias = jnp.zeros(weight.shape[1]) if bias is None else bias

  def eval_logits(images):
    return views.views_to_model_batch(images).reshape(-1, D) @ weight + bias[None]

  def logits(images):
    z = eval_logits(images)
    return z, {"logits": z}

  def loss(images, targets):
    z, aux = logits(images)
    return views.cross_entropy_criterion(z, targets), aux

  return O.ModelFns(loss=loss, logits=logits, eval_logits=eval_logits)


def _data(seed=0, k=K):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.05, 0.95, (B, 1, H, W, C)).astype(np.float32)
  x[0, 0, 0, 0, 0], x[1, 0, 0, 0, 0] = 0.0, 1.0  # pixels at the box's edges
  y = rng.integers(0, k, B)
  w = rng.normal(size=(D, k)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(np.eye(k, dtype=np.float32)[y]), jnp.asarray(w), y


def test_pgd_at_reaches_the_closed_form_worst_case_of_a_binary_logistic_model():
  # Two classes with logits (0, s), s = w.x + b: the loss is log(1 + exp(-y s)) with
  # y = +-1, increasing along -y sign(w) in every pixel, so the L-inf worst case is
  # clip(x - eps y sign(w), 0, 1).
  x, t, _, labels = _data(1, k=2)
  rng = np.random.default_rng(3)
  v = rng.normal(size=D).astype(np.float32)
  weight = jnp.asarray(np.stack([np.zeros(D, np.float32), v], 1))
  bias = jnp.asarray([0.0, 0.1], jnp.float32)
  eps, step = 0.1, 0.05
  obj = O.pgd_at(eps=eps, num_steps=6, step_size=step)  # 2 eps / step = 4 steps cross the ball
  value, aux, state = jax.jit(lambda k: obj.apply(k, None, _fns(weight, bias), x, t, CTX))(
      jax.random.key(0))
  ypm = np.where(labels == 1, 1.0, -1.0)
  xf = np.asarray(x, np.float64).reshape(B, D)
  worst = np.clip(xf - eps * ypm[:, None] * np.sign(v)[None], 0.0, 1.0)
  s = worst @ v.astype(np.float64) + 0.1
  want = np.log1p(np.exp(-ypm * s))
  np.testing.assert_allclose(aux.losses, want, rtol=1e-5)
  np.testing.assert_allclose(value, want.mean(), rtol=1e-5)
  assert state is None and obj.init(10) is None
  adv = O.linf_pgd_ascent(jax.random.key(0), lambda z: _fns(weight, bias).loss(z, t)[0], x,
                          eps=eps, step_size=step, num_steps=6)
  np.testing.assert_allclose(np.asarray(adv).reshape(B, D), worst, atol=1e-6)


@hypothesis.settings(max_examples=10)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), start=st.sampled_from(O.adversarial.START_MODES),
                  eps=st.sampled_from([0.0, 0.01, 0.1, 0.5]))
def test_pgd_never_leaves_the_eps_ball_or_the_box(seed, start, eps):
  x, t, w, _ = _data(seed)
  adv = O.linf_pgd_ascent(jax.random.key(seed), lambda z: _fns(w).loss(z, t)[0], x, eps=eps,
                          step_size=0.3, num_steps=3, start=start)
  assert float(jnp.max(jnp.abs(adv - x))) <= eps + 1e-6
  assert float(jnp.min(adv)) >= 0.0 and float(jnp.max(adv)) <= 1.0


def test_trades_beta_zero_is_erm_and_its_kl_is_nonnegative_and_zero_at_eps_zero():
  x, t, w, _ = _data(2)
  key = jax.random.key(1)

  def value_and_grad(obj):
    return jax.value_and_grad(lambda w_: obj.apply(key, None, _fns(w_), x, t, CTX)[0])(w)

  erm_v, erm_g = value_and_grad(O.mean())
  tr_v, tr_g = value_and_grad(O.trades(beta=0.0, eps=0.1, num_steps=3, step_size=0.05))
  np.testing.assert_allclose(tr_v, erm_v, rtol=1e-6)
  np.testing.assert_allclose(tr_g, erm_g, rtol=1e-5, atol=1e-7)
  for eps, zero in ((0.1, False), (0.0, True)):
    _, aux, _ = O.trades(beta=6.0, eps=eps, num_steps=3, step_size=0.05).apply(
        key, None, _fns(w), x, t, CTX)
    kl = float(aux.metrics["robust_kl"])
    assert kl >= 0.0 and (kl == pytest.approx(0.0, abs=1e-7)) == zero, (eps, kl)


def _fd_grad(f, w, h=1e-3):
  w = np.asarray(w, np.float64)
  g = np.zeros_like(w)
  for i in np.ndindex(w.shape):
    e = np.zeros_like(w)
    e[i] = h
    g[i] = (f(w + e) - f(w - e)) / (2 * h)
  return g


@pytest.mark.parametrize("name", ["trades", "mart", "pgd_at"])
def test_parameter_gradient_vs_finite_differences_with_the_adversarial_example_fixed(name):
  x, t, w, labels = _data(4)
  key = jax.random.key(2)
  obj = {"trades": O.trades(beta=6.0, eps=0.1, num_steps=3, step_size=0.05),
         "mart": O.mart(beta=6.0, eps=0.1, num_steps=3, step_size=0.05),
         "pgd_at": O.pgd_at(eps=0.1, num_steps=3, step_size=0.05)}[name]
  grad = jax.grad(lambda w_: obj.apply(key, None, _fns(w_), x, t, CTX)[0])(w)
  # The example the objective trains on at w, reproduced with the same key and start.
  start = "uniform" if name == "pgd_at" else "normal"
  if name == "trades":
    p0 = _fns(w).eval_logits(x)
    attack = lambda z: L.trades_kl(p0, _fns(w).eval_logits(z))
  else:
    attack = lambda z: _fns(w).loss(z, t)[0]
  adv = O.linf_pgd_ascent(key, attack, x, eps=0.1, step_size=0.05, num_steps=3, start=start)
  xf, af = np.asarray(x, np.float64).reshape(B, D), np.asarray(adv, np.float64).reshape(B, D)
  tf = np.asarray(t, np.float64)

  def logsm(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))

  def value(w_):  # float64, the adversarial example fixed
    lc, la = logsm(xf @ w_), logsm(af @ w_)
    if name == "pgd_at":
      return -(tf * la).sum(1).mean()
    kl = (np.exp(lc) * (lc - la)).sum(1)
    if name == "trades":
      return (-(tf * lc).sum(1) + 6.0 * kl).mean()
    pa, pc = np.exp(la), np.exp(lc)
    rows = np.arange(B)
    wrong = np.argmax(np.where(tf > 0, -np.inf, pa), 1)
    bce = -la[rows, labels] - np.log(1.0001 - pa[rows, wrong] + 1e-12)
    kl = (pc * (lc - np.log(pa + 1e-12))).sum(1)
    return (bce + 6.0 * kl * (1.0000001 - pc[rows, labels])).mean()

  np.testing.assert_allclose(grad, _fd_grad(value, w), rtol=2e-3, atol=2e-5)


def test_adversarial_options_are_checked_naming_the_argument():
  for make, kw, arg in ((O.pgd_at, {"eps": -0.1}, "eps"), (O.pgd_at, {"num_steps": 0}, "num_steps"),
                        (O.trades, {"beta": -1.0}, "beta"), (O.mart, {"beta": -1.0}, "beta"),
                        (O.mart, {"step_size": -1.0}, "step_size")):
    with pytest.raises(ValueError, match=f"^{arg} must be"):
      make(**kw)
  x, t, w, _ = _data(0)
  three = jnp.concatenate([x, x, x], axis=1)
  with pytest.raises(ValueError, match="one view per example"):
    O.trades().apply(jax.random.key(0), None, _fns(w), three, t, CTX)
