"""Tests for drojax.methods: the table, the building blocks, and each objective's value and
gradient against NumPy references on a linear softmax model (closed-form input gradients)."""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from drojax import methods, objectives, specs, weighting

B, K, H, W, C = 8, 3, 2, 2, 1
D = H * W * C


def _data(seed=0, views=1):
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(B, views, H, W, C)).astype(np.float32)
  labels = rng.integers(0, K, B)
  targets = np.eye(K, dtype=np.float32)[labels]
  weight = rng.normal(size=(D, K)).astype(np.float32)
  return images, targets, weight


def _np_losses(images, targets, weight):
  """float64 per-example CE of the linear model, averaged over views; and d loss_i / d x_i."""
  x = images.reshape(B, -1, D).astype(np.float64)  # [B, V, D]
  z = x @ weight.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  ce = -(targets[:, None] * logp).sum(-1)  # [B, V]
  p = np.exp(logp)
  v = x.shape[1]
  grads = (p - targets[:, None]) @ weight.T.astype(np.float64) / v  # [B, V, D]
  return ce.mean(1), grads


def _fns(weight):
  def logits_fn(images):
    logits = methods.views_to_model_batch(images).reshape(-1, D) @ weight
    return logits, {"logits": logits}

  def loss_fn(images, targets):
    logits, aux = logits_fn(images)
    return methods.cross_entropy_criterion(logits, targets), aux

  return objectives.ModelFns(loss=loss_fn, logits=logits_fn,
                             eval_logits=lambda images: logits_fn(images)[0])


def _ctx(step=0):
  return objectives.ObjectiveContext(step=jnp.asarray(step, jnp.int32),
                                     ids=jnp.arange(B, dtype=jnp.int32), axis_name=None)


def test_table_has_the_issue_methods_and_rejects_unknown_names():
  assert {"erm", "dro", "var_dro", "kl_dro", "cvar"} <= set(methods.method_names())
  with pytest.raises(ValueError, match=r"valid methods: .*erm.*Did you mean 'var_dro'"):
    methods.get_method("var_drro")
  with pytest.raises(TypeError, match="MethodConfig"):
    methods.get_method("erm", {"rho": 1.0})
  with pytest.raises(ValueError, match="already registered"):
    methods.register("erm", lambda c: None)
  with pytest.raises(ValueError, match="rho"):
    methods.get_method("dro", methods.MethodConfig(rho=-1.0))
  with pytest.raises(ValueError, match="penalty_mode"):
    methods.get_method("dro", methods.MethodConfig(penalty_mode="approx"))
  for name in methods.method_names():
    m = methods.get_method(name)
    assert m.name == name and isinstance(m, methods.Method)
  assert isinstance(methods.get_method("var_dro").objective.init(5), weighting.TrackerState)
  assert methods.get_method("dro").objective.init(5) is None
  with pytest.raises(ValueError, match="num_examples"):
    methods.get_method("var_dro").objective.init(None)
  # Every augmentation x objective name of the table is registered; absent pairs are absent.
  assert set(methods.TABLE) <= set(methods.method_names())
  assert "mart_augmix" not in methods.method_names()
  with pytest.raises(ValueError, match=r"unknown augmentation 'cutmix'; valid: plain, mixup"):
    methods.build_method("x", "cutmix", "erm", methods.MethodConfig())
  with pytest.raises(ValueError, match=r"unknown objective 'dr0'; valid: erm, dro"):
    methods.build_method("x", "plain", "dr0", methods.MethodConfig())


def test_method_config_defaults_and_adversarial_fields_are_checked():
  c = methods.MethodConfig()
  assert c.penalty_mode == "forward_over_reverse" and c.q == 1.0
  assert (c.adv_eps, c.adv_steps, c.adv_step_size) == (8 / 255, 10, 2 / 255)
  assert c.trades_beta == 6.0 and c.mart_beta == 6.0
  # A config field's bad value is refused by the field's spec, naming the field; ...
  for field, value in (("adv_eps", -0.1), ("adv_steps", 0), ("trades_beta", -1.0),
                       ("mart_beta", -0.5), ("kl_temperature", 0.0), ("cvar_alpha", 0.0),
                       ("var_dro_ema", 0.0), ("augmix_depth", 0), ("penalty_mode", "approx")):
    with pytest.raises(methods.ConfigError, match=f"^{field}: (unknown value .*; )?expected"):
      methods.MethodConfig(**{field: value})
  # norm is the attacks' string ('l2'); the float p of earlier releases is refused, naming it.
  assert c.norm == "l2"
  with pytest.raises(methods.ConfigError, match=r"^norm: norm takes a string now .*'linf'"):
    methods.MethodConfig(norm="inf")
  with pytest.raises(methods.ConfigError, match=r"^norm: expected 'l1', 'l2', 'linf' or"):
    methods.MethodConfig(norm=2.0)
  with pytest.raises(TypeError, match=r"write norm='l2', not the float p 2.0"):
    objectives.wdro(rho=1.0, norm=2.0)
  # ... an objective's own check names its own argument, not a config field.
  for build, match in ((lambda: objectives.kl_dro(temperature=0.0), "^temperature must be"),
                       (lambda: objectives.cvar(alpha=0.0), "^alpha must be"),
                       (lambda: objectives.pgd_at(eps=-0.1), "^eps must be"),
                       (lambda: objectives.pgd_at(num_steps=0), "^num_steps must be"),
                       (lambda: objectives.trades(beta=-1.0), "^beta must be"),
                       (lambda: objectives.var_dro(eps_min=2.0, eps_max=1.0),
                        r"^eps_max \(1.0\) must be >= eps_min")):
    with pytest.raises(ValueError, match=match):
      build()
  # The method layer's rules between fields, naming the field.
  with pytest.raises(methods.ConfigError,
                     match="penalty_subsample: must be 1.0 with 'dro_noisymix'"):
    methods.get_method("dro_noisymix", methods.MethodConfig(penalty_subsample=0.5))
  assert methods.pinned("dro_noisymix") == {"penalty_subsample": (1.0, mock.ANY)}
  assert methods.pinned("dro_augmix") == {}
  with pytest.raises(methods.ConfigError, match="var_dro_eps_min: must be <= var_dro_eps_max"):
    methods.get_method("var_dro_mixup", methods.MethodConfig(var_dro_eps_min=2.0))


def test_each_method_declares_the_fields_it_reads():
  assert methods.fields_read("erm") == ("label_smoothing",)
  assert set(methods.fields_read("dro_mixup")) == {
      "label_smoothing", "mixup_alpha", "rho", "q", "norm", "penalty_mode", "penalty_subsample"}
  assert "rho" not in methods.fields_read("var_dro")
  with pytest.raises(ValueError, match="Did you mean 'var_dro'"):
    methods.fields_read("var_drro")


def test_a_registered_method_brings_its_own_typed_fields():
  seen = []

  def factory(c):
    seen.append((c.focal_gamma, c.focal_mode, c.label_smoothing))
    return methods.build_method("focal_t", "plain", "erm", c)

  methods.register("focal_t", factory, reads=("label_smoothing",),
                   fields={"focal_gamma": (2.0, specs.Real(lo=0.0)), "focal_mode": "soft"})
  try:
    assert methods.fields_read("focal_t") == ("label_smoothing", "focal_gamma", "focal_mode")
    assert methods.field_defaults()["focal_gamma"] == 2.0
    assert methods.MethodConfig().focal_gamma == 2.0  # the default when unset
    c = methods.MethodConfig.from_dict({"focal_gamma": 0.5, "rho": 0.3})
    assert (c.focal_gamma, c.rho, c.to_dict()["focal_mode"]) == (0.5, 0.3, "soft")
    methods.get_method("focal_t", c)
    assert seen == [(0.5, "soft", 0.0)]
    with pytest.raises(methods.ConfigError, match=r"^focal_gamma: expected a finite number >= 0"):
      methods.MethodConfig(extra={"focal_gamma": -1.0})
    with pytest.raises(methods.ConfigError, match=r"^focal_mode: expected a string, got 3"):
      methods.MethodConfig(extra={"focal_mode": 3})
    with pytest.raises(methods.ConfigError, match="Did you mean 'focal_gamma'"):
      methods.MethodConfig(extra={"focal_gama": 1.0})
    with pytest.raises(AttributeError, match="Did you mean 'focal_gamma'"):
      _ = c.focal_gama
    # A second method may share a field only as declared; a built-in cannot be redeclared.
    with pytest.raises(ValueError, match="already registered with default/spec"):
      methods.register("focal_u", factory, fields={"focal_gamma": 3.0})
    with pytest.raises(ValueError, match="built-in MethodConfig field: list it in reads="):
      methods.register("focal_u", factory, fields={"rho": 3.0})
    with pytest.raises(ValueError, match="reads must list built-in MethodConfig fields"):
      methods.register("focal_u", factory, reads=("rh0",))
    with pytest.raises(ValueError, match="refused by its own spec"):
      methods.register("focal_u", factory, fields={"focal_beta": (-1.0, specs.Real(lo=0.0))})
    with pytest.raises(TypeError, match="default must be a bool, int, float or str"):
      methods.register("focal_u", factory, fields={"focal_beta": [1]})
    assert "focal_u" not in methods.method_names() and "focal_beta" not in methods.field_specs()
  finally:
    methods.unregister("focal_t")
  assert "focal_gamma" not in methods.field_specs()
  with pytest.raises(AttributeError):
    _ = methods.MethodConfig().focal_gamma


def test_plain_views_and_smoothed_targets():
  rng = np.random.default_rng(1)
  batch = methods.Batch(jnp.asarray(rng.uniform(size=(4, 2, 2, 3)), jnp.float32),
                        jnp.array([0, 2, 1, 2]), jnp.arange(4))
  views = methods.get_method("erm", methods.MethodConfig(label_smoothing=0.1)).augment(
      jax.random.key(0), batch, 3)
  np.testing.assert_array_equal(views.images[:, 0], batch.images)
  expected = np.full((4, 3), 0.1 / 3)
  expected[np.arange(4), [0, 2, 1, 2]] += 0.9
  np.testing.assert_allclose(views.targets, expected, rtol=1e-6)
  assert views.mix is None


def test_criterion_averages_views_in_view_major_order():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3 * 4, 5)).astype(np.float32)
  targets = rng.dirichlet(np.ones(5), 4).astype(np.float32)
  z = logits.astype(np.float64).reshape(3, 4, 5)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  expected = -(targets[None] * logp).sum(-1).mean(0)
  np.testing.assert_allclose(methods.cross_entropy_criterion(logits, targets), expected,
                             rtol=1e-5)
  with pytest.raises(ValueError, match="logits"):
    methods.cross_entropy_criterion(logits[:5], targets)


def _value_and_grad(objective, images, targets, weight, ctx, state=None):
  def f(w):
    value, aux, _ = objective.apply(jax.random.key(0), state, _fns(w), images, targets, ctx)
    return value, aux
  return jax.value_and_grad(f, has_aux=True)(jnp.asarray(weight))


def _np_param_grads(images, targets, weight):
  """[B, D, K] per-example d loss_i / d W of the linear model (float64)."""
  x = images.reshape(B, -1, D).astype(np.float64)
  z = x @ weight.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bvd,bvk->bdk", x, p - targets[:, None]) / x.shape[1]


def test_erm_objective_is_the_mean():
  images, targets, weight = _data()
  (value, aux), grad = _value_and_grad(methods.get_method("erm").objective, images, targets,
                                       weight, _ctx())
  losses, _ = _np_losses(images, targets, weight)
  np.testing.assert_allclose(value, losses.mean(), rtol=1e-5)
  np.testing.assert_allclose(aux.losses, losses, rtol=1e-5)
  np.testing.assert_allclose(grad, _np_param_grads(images, targets, weight).mean(0),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("q,norm,views", [(1.0, "l2", 1), (2.0, "l2", 3), (2.0, "linf", 1)])
def test_wdro_objective_penalizes_input_gradients_of_all_views(q, norm, views):
  images, targets, weight = _data(3, views)
  rho = 0.7
  m = methods.get_method("dro", methods.MethodConfig(rho=rho, q=q, norm=norm))
  (value, aux), grad = _value_and_grad(m.objective, images, targets, weight, _ctx())
  losses, g = _np_losses(images, targets, weight)
  flat = g.reshape(B, -1)
  dual = np.abs(flat).sum(1) if norm == "linf" else np.sqrt((flat**2).sum(1))
  penalty = np.mean(dual**q) ** (1 / q)
  np.testing.assert_allclose(aux.metrics["penalty"], penalty, rtol=1e-4)
  np.testing.assert_allclose(value, losses.mean() + rho * penalty, rtol=1e-4)
  # The penalty has a real parameter gradient: it differs from the plain mean's.
  erm_grad = _np_param_grads(images, targets, weight).mean(0)
  assert np.abs(np.asarray(grad) - erm_grad).max() > 1e-3

  # ... and it is the gradient of the NumPy objective (central differences in float64).
  def np_objective(w):
    ls, gs = _np_losses(images, targets, w)
    fl = gs.reshape(B, -1)
    du = np.abs(fl).sum(1) if norm == "linf" else np.sqrt((fl**2).sum(1))
    return ls.mean() + rho * np.mean(du**q) ** (1 / q)

  w64 = weight.astype(np.float64)
  fd = np.zeros_like(w64)
  for idx in np.ndindex(w64.shape):
    e = np.zeros_like(w64)
    e[idx] = 1e-5
    fd[idx] = (np_objective(w64 + e) - np_objective(w64 - e)) / 2e-5
  np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-4)


def test_kl_dro_objective_value_and_softmax_weighted_gradient():
  images, targets, weight = _data(4)
  t = 0.5
  m = methods.get_method("kl_dro", methods.MethodConfig(kl_temperature=t))
  (value, _), grad = _value_and_grad(m.objective, images, targets, weight, _ctx())
  losses, _ = _np_losses(images, targets, weight)
  np.testing.assert_allclose(value, t * np.log(np.mean(np.exp(losses / t))), rtol=1e-5)
  w = np.exp(losses / t) / np.exp(losses / t).sum()
  expected = np.einsum("b,bdk->dk", w, _np_param_grads(images, targets, weight))
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_cvar_objective_is_the_mean_of_the_top_fraction():
  images, targets, weight = _data(5)
  m = methods.get_method("cvar", methods.MethodConfig(cvar_alpha=0.25))
  (value, _), _ = _value_and_grad(m.objective, images, targets, weight, _ctx())
  losses, _ = _np_losses(images, targets, weight)
  np.testing.assert_allclose(value, np.sort(losses)[-2:].mean(), rtol=1e-5)


def _np_var_dro_step(losses, mean, var, count, *, eps_min, eps_max, ema=0.1):
  """float64 transcription of one Var-DRO step in the paper's order (ids 0..B-1, no duplicate):
  EMA update of mean and variance first, radii from the UPDATED variances, then the LP by
  linprog. Returns the LP's weights and the updated (mean, var, count)."""
  losses, mean, var = (np.asarray(a, np.float64) for a in (losses, mean, var))
  first = np.asarray(count) == 0
  delta = losses - mean
  new_mean = np.where(first, losses, mean + ema * delta)
  new_var = np.where(first, 0.0, (1 - ema) * (var + ema * delta**2))
  top = new_var.max()
  eps = eps_min + (eps_max - eps_min) * (new_var / top if top > 0 else 0.0 * new_var)
  res = scipy.optimize.linprog(-losses, A_eq=np.ones((1, B)), b_eq=[1.0],
                               bounds=list(zip(np.exp(-eps) / B, np.exp(eps) / B)))
  assert res.status == 0, res.message
  return res.x, (new_mean, new_var, np.asarray(count) + 1)


def test_var_dro_objective_uses_linprog_weights_from_updated_variances():
  images, targets, weight = _data(6)
  rng = np.random.default_rng(6)
  var = rng.uniform(0.0, 2.0, B).astype(np.float32)
  mean = rng.uniform(0.0, 2.0, B).astype(np.float32)
  tracker = weighting.TrackerState(mean=jnp.asarray(mean), var=jnp.asarray(var),
                                   count=jnp.ones(B, jnp.int32))
  eps_min, eps_max = 0.1, 1.5
  m = methods.get_method("var_dro", methods.MethodConfig(
      var_dro_eps_min=eps_min, var_dro_eps_max=eps_max, var_dro_warmup_steps=0,
      var_dro_ramp_steps=0))
  (value, aux), grad = _value_and_grad(m.objective, images, targets, weight, _ctx(step=5),
                                       state=tracker)
  losses, _ = _np_losses(images, targets, weight)
  q, updated = _np_var_dro_step(losses, mean, var, np.ones(B, int), eps_min=eps_min,
                                eps_max=eps_max)
  np.testing.assert_allclose(value, np.dot(q, losses), rtol=1e-5)
  expected = np.einsum("b,bdk->dk", q, _np_param_grads(images, targets, weight))
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(aux.metrics["weights_sum"], 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="tracker"):
    m.objective.apply(None, None, _fns(jnp.asarray(weight)), images, targets, _ctx())
  # apply returns the tracker it solved with: updated by this batch's losses (ids 0..B-1).
  _, _, new = m.objective.apply(None, tracker, _fns(jnp.asarray(weight)), images, targets,
                                _ctx(step=5))
  for got, want in zip(new, updated):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_var_dro_duplicate_ids_share_one_updated_variance():
  """Two copies of an id in one batch: the tracker averages their losses into one update
  (update_tracker's rule), and both rows' radii read that one updated variance."""
  images, targets, weight = _data(10)
  ids = np.array([0, 1, 2, 3, 0, 1, 2, 3])
  rng = np.random.default_rng(10)
  mean, var = rng.uniform(0.0, 2.0, (2, 4)).astype(np.float32)
  tracker = weighting.TrackerState(mean=jnp.asarray(mean), var=jnp.asarray(var),
                                   count=jnp.ones(4, jnp.int32))
  m = methods.get_method("var_dro", methods.MethodConfig(var_dro_eps_max=1.5))
  ctx = objectives.ObjectiveContext(step=jnp.asarray(5, jnp.int32),
                                    ids=jnp.asarray(ids, jnp.int32), axis_name=None)
  value, _, new = m.objective.apply(None, tracker, _fns(jnp.asarray(weight)), images, targets,
                                    ctx)
  losses, _ = _np_losses(images, targets, weight)
  per_id = np.array([losses[ids == i].mean() for i in range(4)])
  delta = per_id - mean
  new_var = 0.9 * (var + 0.1 * delta**2)
  eps = 1.5 * new_var[ids] / new_var.max()
  res = scipy.optimize.linprog(-losses, A_eq=np.ones((1, B)), b_eq=[1.0],
                               bounds=list(zip(np.exp(-eps) / B, np.exp(eps) / B)))
  np.testing.assert_allclose(value, -res.fun, rtol=1e-5)
  np.testing.assert_allclose(new.var, new_var, rtol=1e-5)
  np.testing.assert_array_equal(new.count, [2, 2, 2, 2])


def test_var_dro_weights_act_from_an_examples_second_visit():
  """First visit: the first sighting sets the variance to 0, so the weights are uniform (ERM).
  Second visit (other losses, as after a train step): the variance updated with this visit's
  loss is already > 0, so the weights are the LP's, not uniform (under the old order, weights
  from the variance before the update, they stayed uniform until the third visit)."""
  images, targets, weight = _data(9)
  weight2 = weight + np.random.default_rng(9).normal(scale=0.5, size=weight.shape).astype(
      np.float32)
  m = methods.get_method("var_dro", methods.MethodConfig(var_dro_eps_max=1.0))
  state = m.objective.init(B)
  first, aux1, state = m.objective.apply(None, state, _fns(jnp.asarray(weight)), images,
                                         targets, _ctx(step=0))
  l1, _ = _np_losses(images, targets, weight)
  np.testing.assert_allclose(first, l1.mean(), rtol=1e-5)
  np.testing.assert_allclose(aux1.metrics["weights_max_ratio"], 1.0, rtol=1e-6)
  second, aux2, _ = m.objective.apply(None, state, _fns(jnp.asarray(weight2)), images, targets,
                                      _ctx(step=1))
  l2, _ = _np_losses(images, targets, weight2)
  q, _ = _np_var_dro_step(l2, l1, np.zeros(B), np.ones(B, int), eps_min=0.0, eps_max=1.0)
  np.testing.assert_allclose(second, np.dot(q, l2), rtol=1e-5)
  np.testing.assert_allclose(aux2.metrics["weights_max_ratio"], q.max() * B, rtol=1e-4)
  assert q.max() * B > 1.02 and float(second) > l2.mean() + 1e-4


@pytest.mark.parametrize("name", ["erm", "dro", "kl_dro", "cvar", "var_dro"])
def test_objectives_over_a_split_batch_equal_the_whole_batch(name):
  """Under a named axis (vmap over 4 shards) pmean(objective) equals the unsplit objective."""
  images, targets, weight = _data(7)
  var = np.linspace(0.0, 1.0, B).astype(np.float32)
  tracker = weighting.TrackerState(mean=jnp.zeros(B), var=jnp.asarray(var),
                                   count=jnp.ones(B, jnp.int32))
  m = methods.get_method(name, methods.MethodConfig(rho=0.5, q=2.0, cvar_alpha=0.25))
  state = tracker if name == "var_dro" else None
  whole, _, _ = m.objective.apply(jax.random.key(0), state, _fns(jnp.asarray(weight)), images,
                                  targets, _ctx(step=3))

  def shard(im, tg, ids):
    ctx = objectives.ObjectiveContext(jnp.asarray(3, jnp.int32), ids, "data")
    value, _, _ = m.objective.apply(jax.random.key(0), state, _fns(jnp.asarray(weight)), im, tg,
                                    ctx)
    return jax.lax.pmean(value, "data")

  split = lambda a: a.reshape((4, B // 4) + a.shape[1:])
  out = jax.vmap(shard, axis_name="data")(split(images), split(targets),
                                          split(np.arange(B, dtype=np.int32)))
  np.testing.assert_allclose(out, np.full(4, whole), rtol=1e-5)
