"""Every public module follows the project's API conventions (after dm_pix's ``api_test``):
documented names, ``key`` first, keyword-only options, per-example ``[B]`` returns where a
docstring promises them, and doctests that pass.

One file for the conventions, instead of a partial copy beside each module's tests.
"""

import doctest
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import drojax

PUBLIC_MODULES = (
    "drojax.losses", "drojax.wdro", "drojax.weighting", "drojax.groups", "drojax.objectives",
    "drojax.views", "drojax.augment", "drojax.corruptions", "drojax.attacks", "drojax.evaluate",
    "drojax.methods", "drojax.models", "drojax.train", "drojax.loop", "drojax.checkpoint",
    "drojax.data", "drojax.specs", "drojax.distributed",
)
# Every public function of these carries a doctest and Args/Returns sections.
DOCUMENTED_IN_FULL = ("drojax.losses", "drojax.wdro", "drojax.weighting", "drojax.attacks",
                      "drojax.evaluate")
# Positional parameters with a default, each a deliberate exception: a value that selects a
# variant the way a positional seed or backend does.
POSITIONAL_DEFAULTS = {
    ("drojax.evaluate", "eval_key"): ["seed"],
    ("drojax.attacks", "default_unroll"): ["backend"],
    ("drojax.objectives", "stateless_init"): ["num_examples"],
    ("drojax.corruptions", "params_at"): ["table"],
    ("drojax.train", "make_mesh"): ["num_devices"],
    ("drojax.distributed", "await_peer_failure"): ["seconds"],
    ("drojax.methods", "get_method"): ["config"],
}
# Random functions: each takes its PRNG key as the first argument.
TAKE_KEY = {
    "drojax.augment": ("random_crop_flip", "mixup", "augmix", "augmix_views",
                       "sample_augmix_params", "sample_mixup_params", "sample_noisymix_plan"),
    "drojax.attacks": ("pgd", "pgd_robust", "robust_accuracy", "apgd", "apgd_robust",
                       "apgd_targeted", "apgd_targeted_robust", "square", "square_robust",
                       "robust_suite", "robust_accuracy_suite", "attack_stage", "projected_ascent",
                       "fab", "fab_robust"),
}


def _public_functions(module_name):
  module = importlib.import_module(module_name)
  names = getattr(module, "__all__", None)
  if names is None:  # no __all__: the functions the module itself defines without a leading _
    names = [n for n, o in vars(module).items()
             if not n.startswith("_") and inspect.isfunction(o) and o.__module__ == module_name]
  return [(n, getattr(module, n)) for n in names]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_conventions(module_name):
  for name, obj in _public_functions(module_name):
    if not inspect.isfunction(obj):
      continue
    where = f"{module_name}.{name}"
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{where} has no docstring"
    params = list(inspect.signature(obj).parameters.values())
    required_key = [p for p in params if p.name == "key" and p.default is p.empty]
    assert not required_key or params[0].name == "key", f"{where}: key must come first"
    positional_defaults = [p.name for p in params
                           if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty]
    assert positional_defaults == POSITIONAL_DEFAULTS.get((module_name, name), []), (
        f"{where}: options {positional_defaults} should be keyword-only")
    if name in TAKE_KEY.get(module_name, ()):
      assert params[0].name == "key", f"{where}: a random function takes key first"
    if module_name in DOCUMENTED_IN_FULL:
      assert ">>>" in doc, f"{where} has no doctest example"
      assert "Args:" in doc and "Returns:" in doc, f"{where} lacks Args/Returns"


# Renamed keywords: the old spelling is refused with the new one named (no silent alias).
RENAMED = (
    ("drojax.weighting", "update_tracker", "alpha", "ema"),
    ("drojax.objectives", "pgd_at", "steps", "num_steps"),
    ("drojax.objectives", "trades", "steps", "num_steps"),
    ("drojax.objectives", "mart", "steps", "num_steps"),
    ("drojax.attacks", "pgd", "random_start", "start"),
    ("drojax.attacks", "pgd_robust", "random_start", "start"),
    ("drojax.attacks", "robust_accuracy", "random_start", "start"),
    ("drojax.evaluate", "adversarial_accuracy", "random_start", "start"),
)


@pytest.mark.parametrize("module_name,name,old,new", RENAMED)
def test_old_keywords_are_refused_naming_the_new_one(module_name, name, old, new):
  fn = getattr(importlib.import_module(module_name), name)
  assert new in inspect.signature(fn).parameters and old not in inspect.signature(fn).parameters
  with pytest.raises(TypeError, match=rf"^{name}\(\) takes {new}= \(renamed from {old}=\)"):
    fn(**{old: 1})


def _logits(b, k=5, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, k))


def _labels(b, k=5):
  return jnp.arange(b) % k


_f = lambda x: x.reshape(x.shape[0], -1)[:, :5] * jnp.arange(1.0, 6.0)[None]
# name -> (function of B that returns (args, kwargs), whether row i depends on example i only)
PER_EXAMPLE = {
    "drojax.losses.cross_entropy": (lambda b: ((_logits(b), _labels(b)), {}), True),
    "drojax.losses.jsd_consistency": (
        lambda b: ((jnp.stack([_logits(b), _logits(b, seed=1)]),), {}), True),
    "drojax.losses.trades_kl": (lambda b: ((_logits(b), _logits(b, seed=1)), {}), True),
    "drojax.losses.mart_loss": (
        lambda b: ((_logits(b), _logits(b, seed=1), _labels(b)), {"beta": 6.0}), True),
    "drojax.weighting.radii": (  # scaled by the batch's variances: shape only
        lambda b: ((jnp.linspace(0.1, 1.0, b),), {"eps_min": 0.1, "eps_max": 2.0}), False),
    "drojax.weighting.water_filling": (lambda b: ((jnp.linspace(0.0, 1.0, b), 0.5), {}), False),
    "drojax.weighting.var_dro_weights": (
        lambda b: ((jnp.linspace(0.0, 1.0, b), jnp.linspace(0.1, 1.0, b), 10),
                   {"eps_min": 0.1, "eps_max": 1.0, "warmup_steps": 0, "ramp_steps": 0}),
        False),
    "drojax.attacks.per_example_loss": (
        lambda b: ((_f, jax.random.uniform(jax.random.key(2), (b, 2, 2, 3)), _labels(b)), {}),
        True),
    "drojax.attacks.dlr_loss": (lambda b: ((_logits(b), _labels(b)), {}), True),
    "drojax.attacks.dlr_targeted_loss": (
        lambda b: ((_logits(b), _labels(b), (_labels(b) + 1) % 5), {}), True),
    "drojax.attacks.margin": (lambda b: ((_logits(b), _labels(b)), {}), True),
    "drojax.groups.irm_gradients": (lambda b: ((_logits(b), _labels(b)), {}), True),
    "drojax.views.cross_entropy_criterion": (  # views of 3 rows: shape only
        lambda b: ((_logits(2 * b), jax.nn.softmax(_logits(b, seed=1))), {}), False),
    "drojax.attacks.attack_stage": (  # the active rows are a keyword: shape only
        lambda b: ((jax.random.key(0), _f, jax.random.uniform(jax.random.key(2), (b, 2, 2, 3)),
                    _labels(b)),
                   {"stage": "apgd_ce", "eps": jnp.float32(0.1), "active": jnp.ones(b, bool),
                    "norm": "linf", "num_steps": 2, "num_targets": 0, "num_queries": 0,
                    "p_init": 0.8}), False),
}


def _promises_per_example(obj):
  doc = inspect.getdoc(obj) or ""
  returns = doc.split("Returns:")[1].strip() if "Returns:" in doc else ""
  return returns.startswith("``[B]``") or returns.startswith("Per-example losses ``[B]``")


def test_every_per_example_return_is_checked():
  promised = {f"{m}.{n}" for m in PUBLIC_MODULES for n, o in _public_functions(m)
              if inspect.isfunction(o) and _promises_per_example(o)}
  assert promised == set(PER_EXAMPLE), promised ^ set(PER_EXAMPLE)


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_per_example_returns(name):
  module_name, fn_name = name.rsplit(".", 1)
  fn = getattr(importlib.import_module(module_name), fn_name)
  build, independent = PER_EXAMPLE[name]
  args, kwargs = build(6)
  out = np.asarray(fn(*args, **kwargs))
  assert out.shape == (6,), (name, out.shape)
  if independent:  # the first 3 rows alone give the same 3 values
    first = np.asarray(fn(*[_rows(a, 3) for a in args], **kwargs))
    np.testing.assert_allclose(first, out[:3], rtol=1e-6, atol=1e-7, err_msg=name)


def _rows(a, n):
  if callable(a) or np.ndim(a) == 0:
    return a
  a = jnp.asarray(a)
  return a[:, :n] if a.ndim == 3 and a.shape[0] == 2 and a.shape[1] == 6 else a[:n]


def _modules_with_doctests():
  names = []
  for package in ("drojax",):
    for info in pkgutil.walk_packages(drojax.__path__, package + "."):
      names.append(info.name)
  return sorted(names)


# Doctests of every module whose examples run on CPU in seconds (the rest: data loaders that
# need files, the orbax/distributed plumbing) -- each listed, so a module is never skipped by
# accident.
DOCTESTED = (
    "drojax.losses", "drojax.wdro", "drojax._wdro_modes", "drojax.weighting",
    "drojax.objectives.adversarial",
    "drojax.objectives.dro", "drojax.augment.crop_flip", "drojax.augment.mixup",
    "drojax.augment.ops", "drojax.augment.augmix", "drojax.augment.noisymix",
    "drojax.data.arrays", "drojax.data.digits", "drojax.data.images", "drojax.data.pipeline",
    "drojax.data.registry", "drojax.data.fashion_mnist", "drojax.data.waterbirds",
    "drojax.data.tfds_builders", "drojax.methods", "drojax.specs", "drojax._checks",
    "drojax.attacks.projected", "drojax.attacks.auto", "drojax.attacks.square_attack",
    "drojax.attacks.fab_attack", "drojax.attacks.suite", "drojax.evaluate.batching",
    "drojax.evaluate.clean", "drojax.evaluate.corruption", "drojax.evaluate.adversarial",
    "drojax.evaluate.groups", "drojax.evaluate.protocol", "drojax.evaluate.share",
    "drojax.evaluate.calibration",
)


def test_doctested_modules_exist():
  assert set(DOCTESTED) <= set(_modules_with_doctests())


@pytest.mark.parametrize("module_name", DOCTESTED)
def test_doctests(module_name):
  module = importlib.import_module(module_name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
  assert result.attempted > 0 or module_name == "drojax.specs"
