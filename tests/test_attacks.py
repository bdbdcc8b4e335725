"""Tests for drojax.attacks: FGSM/PGD against float64 NumPy references and attack properties."""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from drojax import attacks

# ----------------------------------------------------------------------------- fixtures


def _mlp_apply(params, x):
  h = x.reshape(x.shape[0], -1)
  h = jax.nn.relu(h @ params["w1"] + params["b1"][None])
  return h @ params["w2"] + params["b2"][None]


@pytest.fixture(scope="module")
def digits_model():
  """A 64-32-10 MLP trained for 80 full-batch Adam steps on sklearn digits (8x8x1 in [0, 1])."""
  data = load_digits()
  x = (data.images / 16.0).astype(np.float32)[..., None]
  y = data.target.astype(np.int32)
  xtr, ytr, xte, yte = x[:1500], y[:1500], x[1500:1564], y[1500:1564]
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
      "w1": jax.random.normal(k1, (64, 32)) * 0.2, "b1": jnp.zeros(32),
      "w2": jax.random.normal(k2, (32, 10)) * 0.2, "b2": jnp.zeros(10),
  }
  opt = optax.adam(0.02)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(_mlp_apply(p, xtr), ytr).mean()
    g = jax.grad(loss)(params)
    upd, state = opt.update(g, state)
    return optax.apply_updates(params, upd), state

  for _ in range(80):
    params, state = step(params, state)
  logits_fn = functools.partial(_mlp_apply, params)
  acc = float(jnp.mean(jnp.argmax(logits_fn(xte), -1) == yte))
  assert acc > 0.85, acc  # the attacks below need a model that is right to begin with
  return logits_fn, jnp.asarray(xte), jnp.asarray(yte)


# --------------------------------------------------------- float64 NumPy reference (linear model)


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _np_linear_grad(w, b, x, y):
  """d CE(W x + b, y) / d x for a linear model, analytically: W (softmax - onehot)."""
  flat = x.reshape(x.shape[0], -1)
  p = _np_softmax(flat @ w + b)
  p[np.arange(len(y)), y] -= 1.0
  return (p @ w.T).reshape(x.shape)


def _np_pgd(w, b, x, y, eps, step, steps, norm):
  xa = x.copy()
  for _ in range(steps):
    g = _np_linear_grad(w, b, xa, y)
    if norm == "linf":
      xa = xa + step * np.sign(g)
      xa = np.clip(xa, x - eps, x + eps)
    else:
      gn = np.sqrt((g ** 2).reshape(len(g), -1).sum(1)).reshape(-1, 1, 1, 1)
      xa = xa + step * g / gn
      d = xa - x
      dn = np.sqrt((d ** 2).reshape(len(d), -1).sum(1)).reshape(-1, 1, 1, 1)
      xa = x + d * np.minimum(1.0, eps / dn)
    xa = np.clip(xa, 0.0, 1.0)
  return xa


@pytest.fixture(scope="module")
def linear_problem():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(48, 5))
  b = rng.normal(size=5)
  x = rng.uniform(0.0, 1.0, size=(6, 4, 4, 3))
  y = rng.integers(0, 5, size=6)
  return w, b, x, y


def _linear_fn(w, b):
  w32, b32 = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
  return lambda z: z.reshape(z.shape[0], -1) @ w32 + b32[None]


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.05, 0.02), ("l2", 0.5, 0.2)])
def test_pgd_matches_numpy_reference(linear_problem, norm, eps, step):
  w, b, x, y = linear_problem
  ref = _np_pgd(w, b, x, y, eps, step, 4, norm)
  got = attacks.pgd(jax.random.key(0), _linear_fn(w, b), jnp.asarray(x, jnp.float32),
                    jnp.asarray(y), eps=eps, step_size=step, num_steps=4, norm=norm,
                    start="none")
  np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5)


def test_fgsm_matches_numpy_reference(linear_problem):
  w, b, x, y = linear_problem
  ref = np.clip(x + 0.03 * np.sign(_np_linear_grad(w, b, x, y)), 0, 1)
  got = attacks.fgsm(_linear_fn(w, b), jnp.asarray(x, jnp.float32), jnp.asarray(y), eps=0.03)
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6)


@pytest.mark.parametrize("unroll", [True, False])
def test_unrolled_and_fori_loop_agree(linear_problem, unroll):
  w, b, x, y = linear_problem
  ref = _np_pgd(w, b, x, y, 0.05, 0.02, 3, "linf")
  got = attacks.pgd(jax.random.key(1), _linear_fn(w, b), jnp.asarray(x, jnp.float32),
                    jnp.asarray(y), eps=0.05, step_size=0.02, num_steps=3, start="none",
                    unroll=unroll)
  np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5)


# ------------------------------------------------------------------------ attack properties


_LIN = (np.random.default_rng(3).normal(size=(48, 5)), np.random.default_rng(4).normal(size=5))
_LIN_FN = None


def _lin_fn():
  global _LIN_FN  # one closure for the module, so the jitted attack compiles once per norm
  if _LIN_FN is None:
    _LIN_FN = _linear_fn(*_LIN)
  return _LIN_FN


@hypothesis.given(eps=st.floats(0.0, 0.3), frac=st.floats(0.1, 1.5), seed=st.integers(0, 99),
                  norm=st.sampled_from(attacks.NORMS))
def test_inside_ball_and_clipped(eps, frac, seed, norm):
  scale = 1.0 if norm == "linf" else 8.0  # an L2 ball of 8*eps on 48 pixels is comparable
  key = jax.random.key(seed)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (6, 4, 4, 3))
  y = jax.random.randint(jax.random.fold_in(key, 2), (6,), 0, 5)
  e = eps * scale
  x_adv = attacks.pgd(key, _lin_fn(), x, y, eps=e, step_size=frac * e, num_steps=3, norm=norm)
  x_adv = np.asarray(x_adv, np.float64)
  d = x_adv - np.asarray(x, np.float64)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  if norm == "linf":
    assert np.abs(d).max() <= e + 1e-6
  else:
    assert np.sqrt((d ** 2).reshape(6, -1).sum(1)).max() <= e * (1 + 1e-5) + 1e-6


class OuterJitTest(chex.TestCase):
  """The attacks trace inside a caller's jit (variables as arguments) and agree with eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_pgd_under_outer_jit(self):
    w, b = (jnp.asarray(a, jnp.float32) for a in _LIN)
    x = jax.random.uniform(jax.random.key(0), (6, 4, 4, 3))
    y = jnp.arange(6) % 5

    @self.variant
    def attack(w, b, x, y, eps):
      f = lambda z: z.reshape(z.shape[0], -1) @ w + b[None]
      return attacks.pgd_robust(jax.random.key(1), f, x, y, eps=eps, step_size=eps / 2,
                                num_steps=2, restarts=2)

    got, robust = attack(w, b, x, y, 0.05)
    ref, ref_robust = attacks.pgd_robust(jax.random.key(1), _lin_fn(), x, y, eps=0.05,
                                         step_size=0.025, num_steps=2, restarts=2)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(robust), np.asarray(ref_robust))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_loss_not_lower_than_clean(digits_model, norm, eps):
  f, x, y = digits_model
  clean = attacks.per_example_loss(f, x, y)
  x_adv = attacks.pgd(jax.random.key(0), f, x, y, eps=eps, step_size=eps / 4, num_steps=8,
                      norm=norm)
  adv = attacks.per_example_loss(f, x_adv, y)
  assert float(adv.mean()) > float(clean.mean()) + 0.1
  assert np.all(np.asarray(adv) >= np.asarray(clean) - 1e-4)


def test_pgd_at_least_as_strong_as_fgsm(digits_model):
  f, x, y = digits_model
  eps = 0.1
  clean_acc = float(jnp.mean(jnp.argmax(f(x), -1) == y))
  fgsm_acc = float(jnp.mean(jnp.argmax(f(attacks.fgsm(f, x, y, eps=eps)), -1) == y))
  pgd_acc = float(attacks.robust_accuracy(jax.random.key(0), f, x, y, eps=eps,
                                          step_size=eps / 4, num_steps=10))
  assert fgsm_acc < clean_acc  # the attack does something at this budget
  assert pgd_acc <= fgsm_acc
  assert pgd_acc < clean_acc - 0.2


def test_zero_eps_is_identity_and_clean_accuracy(digits_model):
  f, x, y = digits_model
  x_adv, robust = attacks.pgd_robust(jax.random.key(0), f, x, y, eps=0.0, step_size=0.01,
                                     num_steps=3)
  np.testing.assert_array_equal(np.asarray(x_adv), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(robust), np.asarray(jnp.argmax(f(x), -1) == y))


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_model_ignoring_input_is_never_fooled(norm):
  const = lambda z: jnp.zeros((z.shape[0], 3)).at[:, 2].set(1.0) + 0.0 * z.sum()
  x = jax.random.uniform(jax.random.key(0), (8, 4, 4, 3))
  y = jnp.full((8,), 2)
  acc = attacks.robust_accuracy(jax.random.key(1), const, x, y, eps=0.5, step_size=0.2,
                                num_steps=2, norm=norm, restarts=2)
  assert float(acc) == 1.0


# ------------------------------------------------------------------------------ restarts


def _coin_model(z):
  """Class 1 iff pixel (0, 0, 0) exceeds 0.5; fed x = 0.5, a random start fools it w.p. 1/2."""
  s = 100.0 * (z[:, 0, 0, 0] - 0.5)
  return jnp.stack([jnp.zeros_like(s), s], -1)


def test_restarts_keep_first_fooling_restart_and_count_robust_only_if_never_fooled():
  n = 512
  x = jnp.full((n, 2, 2, 1), 0.5)
  y = jnp.zeros((n,), jnp.int32)
  key = jax.random.key(7)
  kw = dict(eps=0.2, step_size=0.0, num_steps=0)  # the start is the whole attack
  x1, r1 = attacks.pgd_robust(key, _coin_model, x, y, **kw)
  x3, r3 = attacks.pgd_robust(key, _coin_model, x, y, restarts=3, **kw)
  r1, r3 = np.asarray(r1), np.asarray(r3)
  fooled3 = np.asarray(jnp.argmax(_coin_model(x3), -1) != y)
  # The returned images fool the model exactly for the non-robust examples.
  np.testing.assert_array_equal(fooled3, ~r3)
  # Restart 0 is shared: anything fooled with one restart stays fooled, with the same image.
  assert np.all(~r3[~r1])
  np.testing.assert_array_equal(np.asarray(x3)[~r1], np.asarray(x1)[~r1])
  # P(robust) = (1/2)^restarts; binomial 5-sigma bands.
  for r, p in ((r1, 0.5), (r3, 0.125)):
    sd = np.sqrt(n * p * (1 - p))
    assert abs(r.sum() - n * p) < 5 * sd, (r.sum(), n * p)


def test_clean_misclassified_example_is_not_robust():
  const = lambda z: jnp.zeros((z.shape[0], 2)).at[:, 0].set(1.0) + 0.0 * z.sum()
  x = jnp.zeros((2, 2, 2, 1))
  _, robust = attacks.pgd_robust(jax.random.key(0), const, x, jnp.array([0, 1]), eps=0.1,
                                 step_size=0.1, num_steps=1)
  np.testing.assert_array_equal(np.asarray(robust), [True, False])


def test_new_eps_does_not_recompile(linear_problem):
  w, b, x, y = linear_problem
  f = _linear_fn(w, b)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  attacks.pgd(jax.random.key(0), f, x, y, eps=0.1, step_size=0.01, num_steps=2)
  size = attacks.projected._pgd_impl._cache_size()
  attacks.pgd(jax.random.key(1), f, x, y, eps=0.2, step_size=0.03, num_steps=2)
  assert attacks.projected._pgd_impl._cache_size() == size


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(norm="l1"), ValueError, "norm"),
    (dict(num_steps=-1), ValueError, "num_steps"),
    (dict(restarts=0), ValueError, "restarts"),
    (dict(eps=-0.1), ValueError, "eps"),
    (dict(step_size=-1.0), ValueError, "step_size"),
    (dict(eps="big"), TypeError, "eps"),
])
def test_bad_options_raise(kwargs, err, match):
  args = dict(eps=0.1, step_size=0.01, num_steps=1)
  args.update(kwargs)
  with pytest.raises(err, match=match):
    attacks.pgd(jax.random.key(0), _lin_fn(), jnp.zeros((2, 4, 4, 3)),
                jnp.zeros(2, jnp.int32), **args)


@pytest.mark.parametrize("x,y,err,match", [
    (jnp.zeros((2, 48)), jnp.zeros(2, jnp.int32), ValueError, "rank 4"),
    (jnp.zeros((2, 4, 4, 3), jnp.uint8), jnp.zeros(2, jnp.int32), TypeError, "floating"),
    (jnp.zeros((2, 4, 4, 3)), jnp.zeros(3, jnp.int32), ValueError, r"\[B\] = \[2\]"),
    (jnp.zeros((2, 4, 4, 3)), jnp.zeros(2), TypeError, "integer"),
])
def test_bad_arrays_raise(x, y, err, match):
  with pytest.raises(err, match=match):
    attacks.fgsm(_lin_fn(), x, y, eps=0.1)
  with pytest.raises(err, match=match):
    attacks.pgd(jax.random.key(0), _lin_fn(), x, y, eps=0.1, step_size=0.1, num_steps=1)


def test_default_unroll_per_backend():
  assert attacks.default_unroll("cpu") is True
  assert attacks.default_unroll("gpu") is False
  assert attacks.default_unroll("tpu") is False
