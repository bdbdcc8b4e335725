"""NoisyMix plans (statistics vs the formulas), the JSD criterion, the registered
augmentation methods' views, and one train step of each through drojax.train."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from drojax import methods, train, views
from drojax.augment import mix_and_perturb
from drojax.augment.noisymix import sample_noisymix_plan
from drojax.models import TinyNet

from _shared_data import SHARED_DATA

AUG_METHODS = ("mixup", "augmix", "noisymix", "dro_mixup", "dro_augmix", "dro_noisymix",
               "var_dro_mixup", "var_dro_augmix")
_DATA = str(SHARED_DATA / "cifar10_test_lossless_first1000.npz")


# ------------------------------------------------------------------------------ NoisyMix

def test_noisymix_plan_layout_and_targets():
  b, v, k = 6, 3, 4
  y = jax.nn.one_hot(jnp.arange(b) % k, k)
  plan, t = sample_noisymix_plan(jax.random.key(0), y, num_views=v, add_level=0.5,
                                 mult_level=0.3)
  partner = np.asarray(plan.partner).reshape(v, b)
  perm = partner[0]
  assert sorted(perm.tolist()) == list(range(b))
  for view in range(v):  # view v of example i mixes with view v of example perm[i]
    np.testing.assert_array_equal(partner[view], view * b + perm)
  lam = np.asarray(plan.lam)
  assert np.all(lam == lam[0])  # one lam per batch, as the reference
  np.testing.assert_allclose(t, lam[0] * np.asarray(y) + (1 - lam[0]) * np.asarray(y)[perm],
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(t).sum(1), 1.0, atol=1e-6)
  add = np.asarray(plan.add_scale).reshape(v, b)
  # One Beta(2, 5) draw per view (per batch), scaled by the view's level 0.5 x (v + 1).
  assert np.all(add == add[:, :1])
  assert np.all((add[:, 0] > 0) & (add[:, 0] <= 0.5 * np.arange(1, v + 1)))
  assert np.asarray(plan.mult_scale).max() <= 0.3
  assert plan.sparsity.shape == () and 0 <= int(plan.layer) <= 4
  no_manifold, _ = sample_noisymix_plan(jax.random.key(1), y, manifold=False)
  assert int(no_manifold.layer) == 0


def test_noisymix_draws_follow_beta_and_uniform_layer():
  b = 20000
  y = jnp.ones((b, 2)) / 2
  plan, _ = jax.jit(lambda k, t: sample_noisymix_plan(k, t, num_views=2, add_level=0.4,
                                                      mult_level=0.2, per_example=True))(
                                                          jax.random.key(0), y)
  add = np.asarray(plan.add_scale).reshape(2, b) / (0.4 * np.array([[1.0], [2.0]]))
  mult = np.asarray(plan.mult_scale) / 0.2
  for draws in (add[0], add[1], mult):
    assert stats.kstest(draws, stats.beta(2, 5).cdf).pvalue > 1e-3
  assert stats.kstest(np.asarray(plan.lam)[:b], stats.uniform(0, 1).cdf).pvalue > 1e-3
  layers = jax.jit(jax.vmap(lambda k: sample_noisymix_plan(k, y[:2])[0].layer))(
      jax.random.split(jax.random.key(1), 5000))
  np.testing.assert_allclose(np.bincount(np.asarray(layers), minlength=5) / 5000, [0.2] * 5,
                             atol=0.02)


def test_mix_and_perturb_noise_statistics_match_the_formula():
  # With lam = 1 the output is (1 + m U(-1, 1) keep_m) h + a N(0, 1) keep_a on h = 1:
  # mean 1, variance (1 - s) (m^2 / 3 + a^2), and exactly 1 where both noises are dropped.
  b, a, m, s = 4, 0.3, 0.5, 0.25
  h = jnp.ones((b, 64, 64, 16))
  y = jnp.ones((b, 2)) / 2
  plan, _ = sample_noisymix_plan(jax.random.key(2), y)
  plan = plan._replace(lam=jnp.ones(b), add_scale=jnp.full(b, a), mult_scale=jnp.full(b, m),
                       sparsity=jnp.float32(s), partner=jnp.arange(b, dtype=jnp.int32))
  out = np.asarray(jax.jit(lambda a, p: mix_and_perturb(a, p, position=0))(h, plan), np.float64)
  n = out.size
  assert abs(out.mean() - 1.0) < 4 * np.sqrt((1 - s) * (m**2 / 3 + a**2) / n)
  np.testing.assert_allclose(out.var(), (1 - s) * (m**2 / 3 + a**2), rtol=0.02)
  np.testing.assert_allclose(np.mean(out == 1.0), s**2, atol=0.005)


# ------------------------------------------------------------------------------ JSD criterion

def _np_jsd_loss(logits, targets, weight):
  z = np.asarray(logits, np.float64).reshape(3, targets.shape[0], -1)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ce = -(targets * np.log(p[0])).sum(-1)
  mix = np.clip(p.mean(0), 1e-7, 1.0)
  kl = (p * (np.log(p) - np.log(mix))).sum(-1).mean(0)
  return ce + weight * kl


def test_jsd_criterion_matches_augmix_loss():
  rng = np.random.default_rng(0)
  targets = np.eye(5)[rng.integers(0, 5, 4)]
  logits = rng.normal(size=(12, 5)).astype(np.float32)
  crit = views.jsd_criterion(12.0)
  np.testing.assert_allclose(crit(jnp.asarray(logits), jnp.asarray(targets, jnp.float32)),
                             _np_jsd_loss(logits, targets, 12.0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="V >= 2"):
    crit(jnp.zeros((4, 5)), jnp.zeros((4, 5)))


# ------------------------------------------------------------------------------ methods

def _images(b=8, size=16):
  if os.path.exists(_DATA):
    with np.load(_DATA) as d:
      return d["images"][:b, 8:8 + size, 8:8 + size], d["labels"][:b].astype(np.int32)
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (b, size, size, 3)).astype(np.uint8), np.arange(b) % 4


@pytest.mark.parametrize("name", ["mixup", "augmix", "noisymix"])
def test_views_shapes_and_targets(name):
  images, labels = _images()
  batch = methods.Batch(jnp.asarray(images, jnp.float32) / 255, jnp.asarray(labels),
                        jnp.arange(8))
  method = methods.get_method(name, methods.MethodConfig(augmix_depth=1))
  views = jax.jit(method.augment, static_argnums=2)(jax.random.key(0), batch, 10)
  v = 1 if name == "mixup" else 3
  assert views.images.shape == (8, v, 16, 16, 3)
  assert views.targets.shape == (8, 10)
  np.testing.assert_allclose(views.targets.sum(1), 1.0, atol=1e-6)
  assert float(views.images.min()) >= 0 and float(views.images.max()) <= 1
  if v == 3:
    np.testing.assert_array_equal(views.images[:, 0], batch.images)  # clean view first
  assert (views.mix is not None) == (name == "noisymix")
  if views.mix is not None:
    assert views.mix.partner.shape == (24,) and views.mix.lam.shape == (24,)


def test_every_augmentation_method_is_registered():
  assert set(AUG_METHODS) <= set(methods.method_names())
  for name in AUG_METHODS:
    m = methods.get_method(name)
    assert m.name == name and (m.objective_name == "var_dro") == name.startswith("var_dro")


@pytest.mark.slow  # one train-step compile per method (W-DRO: grad of grad): ~5-20 s CPU each
@pytest.mark.parametrize("name", AUG_METHODS)
def test_train_steps_reduce_the_loss(name):
  images, labels = _images()
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels),
           "id": jnp.arange(8, dtype=jnp.int32)}
  config = methods.MethodConfig(augmix_depth=1, rho=0.1, noisymix_add_noise=0.05,
                                noisymix_mult_noise=0.05)
  method = methods.get_method(name, config)
  model = TinyNet(num_classes=10, width=4)
  mesh = train.make_mesh(1)
  opt = train.make_optimizer(100, learning_rate=0.1, weight_decay=0.0)
  state = train.create_train_state(jax.random.key(0), model, opt, (16, 16, 3), method=method,
                                   num_examples=8)
  step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=False)
  evaluate = train.make_eval_step(model, mesh)
  before = float(evaluate(state, batch)["loss_sum"]) / 8
  for _ in range(4):
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
  after = float(evaluate(state, batch)["loss_sum"]) / 8
  assert after < before, (name, before, after)
