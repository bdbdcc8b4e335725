"""What the experiment configs share: the fields every experiment has (``FIELDS``: default and
spec), the base config, its presets and its validation (README, "The paper experiments").

Every config is a locked ``ml_collections.ConfigDict``; ``config.method_config`` holds exactly
``drojax.methods``' fields (users' registered ones too). ``validate`` checks every field against
its spec (``config_specs``; a field without one is an error), the rules between fields and the
method's factory, built once. ``not_applying`` says why a field has no effect under a config
(``rho`` for ``var_dro``, per ``drojax.methods.fields_read``; ``momentum`` with Adam): an error
when the user set it, fine for a preset value.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import ml_collections

from drojax import methods
from drojax.specs import (Bool, Choice, ConfigError, Custom, Int, Real, Spec, Str, Tuple,
                          check_fields, flatten)

PRESETS = ("paper", "quick")
EXPERIMENTS = ("cifar_c", "fashion_mnist_pgd", "waterbirds", "group_shift")
EVAL_CORRUPTIONS = ("published", "generated", "refined")
# The quick preset: a CPU-sized run of the whole pipeline, chosen on the digits' training split
# only (candidates, accuracies and the rule: docs/benchmarks.md, "8 epochs and one compilation
# per corruption"). Compiling all 15 corruptions costs ~2.5 min on 2 CPU cores (fog, frost,
# elastic and snow most): it evaluates a cheap representative of each family.
QUICK = {"width": 8, "num_epochs": 12, "batch_size": 32, "learning_rate": 0.1,
         "warmup_epochs": 1, "eval.images": 200, "eval.batch_size": 200,
         "eval.corruption_names": ("gaussian_noise", "impulse_noise", "defocus_blur",
                                   "motion_blur", "zoom_blur", "snow", "brightness", "contrast",
                                   "pixelate", "jpeg_compression"),
         "eval.severities": (1, 3, 5), "eval.adv_eps": (2 / 255, 8 / 255), "eval.pgd_steps": 5,
         "checkpoint_every_steps": 100, "log_every_steps": 10}
# Digits: rho 0.5 (candidate E), 8 epochs (E8; other datasets keep 12), the whole test split of
# 359 images (standard error 1.6 points instead of 2.1 on 200, for ~4 s more).
QUICK_DIGITS = {"method_config.rho": 0.5, "num_epochs": 8, "eval.images": 0,
                "eval.batch_size": 359}


def apply_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The quick preset on ``c``: ``QUICK`` (and ``QUICK_DIGITS`` on digits)."""
  set_fields(c, {**QUICK, **(QUICK_DIGITS if c.dataset == "digits" else {})})
  # Not where the method fixes it (NoisyMix + W-DRO: 1); validate names an unknown --method.
  if c.method in methods.method_names() and "penalty_subsample" not in methods.pinned(c.method):
    c.method_config.penalty_subsample = 0.25
  return c


# ----------------------------------------------------------------------------- field specs

def _lib(module: str):
  """``drojax.<module>``, imported when a config is checked (not when this module is)."""
  return importlib.import_module(f"drojax.{module}")


_PIXELS = " (pixel units in [0, 1]: write 8/255, not 8)"

# Every field the experiments share: (its default, the DRO-Augment CIFAR recipe; its spec).
FIELDS: dict[str, tuple[Any, Spec]] = {
    "experiment": ("cifar_c", Str()),
    "method": ("erm", Choice(methods.method_names)),
    "dataset": ("cifar10", Custom(lambda name: _lib("data.registry").validate_name(name))),
    "preset": ("paper", Choice(PRESETS)),
    "data_dir": ("", Str()),  # '' -> $DROJAX_DATA_DIR, then each dataset's default places
    "download": (False, Bool()),
    "seed": (0, Int(lo=0, hi=2**31 - 1)),
    "model": ("preact_resnet18", Choice(lambda: _lib("models").model_names())),
    "width": (64, Int(lo=1)),
    # Optimisation (recipes.md: SGD 0.1, momentum 0.9, Nesterov, wd 5e-4, batch 128, cosine)
    "num_epochs": (200, Int(lo=1)),
    "batch_size": (128, Int(lo=1)),
    "optimizer": ("sgd", Choice(("sgd", "adam"))),
    "learning_rate": (0.1, Real(lo=0.0, lo_open=True)),
    "momentum": (0.9, Real(lo=0.0, hi=1.0, hi_open=True)),
    "nesterov": (True, Bool()),
    "weight_decay": (5e-4, Real(lo=0.0)),
    "lr_schedule": ("cosine", Choice(("cosine", "constant"))),
    "lr_min": (1e-6, Real(lo=0.0)),
    "warmup_epochs": (0, Int(lo=0)),
    "train_subset": (0, Int(lo=0)),  # 0 = the whole train split; else a fixed random subset
    # Evaluation
    "eval.images": (0, Int(lo=0)),  # 0 = the whole test split; else a fixed random subset
    "eval.batch_size": (500, Int(lo=1)),
    "eval.corruptions": ("generated", Choice(EVAL_CORRUPTIONS)),
    # the extracted CIFAR-10-C / CIFAR-100-C folder (published only)
    "eval.published_dir": ("", Str()),
    # folder of frost photographs for generated frost ("" = procedural texture)
    "eval.frost_dir": ("", Str()),
    # () = all 19: the mean over the 15 standard x 5 is the headline, the 4 extras beside it
    "eval.corruption_names": ((), Tuple(Choice(lambda: [*_lib("corruptions").NAMES, "none"]),
                                        unique=True)),
    "eval.severities": ((1, 2, 3, 4, 5), Tuple(Int(lo=1, hi=5), unique=True)),
    # <= 1 for eval.norm=linf (a cross-field rule); an L2 budget may exceed 1.
    "eval.adv_eps": ((2 / 255, 8 / 255), Tuple(Real(lo=0.0, hint=_PIXELS), unique=True)),
    "eval.pgd_steps": (10, Int(lo=1)),
    "eval.pgd_restarts": (1, Int(lo=1)),
    # pgd | apgd (APGD-CE) | suite (APGD-CE, APGD-T, FAB-T, Square)
    "eval.attack": ("pgd", Choice(lambda: _lib("evaluate").ATTACKS)),
    # the norm of eval.adv_eps, for every attack
    "eval.norm": ("linf", Choice(lambda: _lib("attacks").NORMS)),
    "eval.apgd_steps": (100, Int(lo=1)),  # APGD and FAB-T iterations (attack=apgd|suite)
    "eval.square_queries": (5000, Int(lo=1)),  # Square's queries per image (attack=suite)
    "eval.groups": (False, Bool()),
    # Bookkeeping
    "checkpoint_every_steps": (500, Int(lo=1)),  # and at every epoch end (drojax.loop.fit)
    "keep_checkpoints": (2, Int(lo=1)),
    "log_every_steps": (50, Int(lo=1)),
    "progress": (True, Bool()),
    "compilation_cache_dir": ("~/.cache/drojax/jax", Str()),
}


def base_config(*, method: str, dataset: str, preset: str) -> ml_collections.ConfigDict:
  """The fields every experiment shares (``FIELDS``' defaults) and ``method_config``: every
  method hyper-parameter (``MethodConfig``'s and those users' methods registered)."""
  c = ml_collections.ConfigDict({"method_config": methods.field_defaults()})
  set_fields(c, {path: default for path, (default, _) in FIELDS.items()})
  c.method, c.dataset, c.preset = method, dataset, preset
  return c


def make_config(experiment: str, method: str, *, preset: str, dataset: str,
                recipe: Mapping[str, Any], quick: Mapping[str, Any] | None = None,
                extra_fields: Mapping[str, tuple[Any, Spec]] | None = None
                ) -> ml_collections.ConfigDict:
  """An experiment's locked config: ``base_config``, its ``extra_fields`` ``{name: (default,
  spec)}``, its ``recipe`` ``{dotted field: value}``; the quick preset then applies
  ``apply_quick`` and ``quick`` (the recipe values the quick preset keeps or changes)."""
  c = base_config(method=method, dataset=dataset, preset=preset)
  c.experiment = experiment
  set_fields(c, {name: default for name, (default, _) in (extra_fields or {}).items()})
  set_fields(c, recipe)
  if preset == "quick":
    set_fields(apply_quick(c), quick or {})
  c.lock()
  return c


def set_fields(c: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets ``{field: value}`` in ``c``; a field is a name or ``group.name`` (``eval.images``; an
  unlocked ``c`` gains a missing group)."""
  for path, value in values.items():
    group, _, name = path.rpartition(".")
    if group and group not in c:
      c[group] = ml_collections.ConfigDict()
    (c[group] if group else c)[name] = value


def get_config_of(make: Callable[..., ml_collections.ConfigDict]
                  ) -> Callable[[str], ml_collections.ConfigDict]:
  """The ``get_config(arg)`` of a preset module whose factory is ``make(method, *, preset,
  dataset)``: ``arg`` = ``method[,preset[,dataset]]`` (e.g. ``"dro_augmix,quick,digits"``)."""

  def get_config(arg: str = "erm") -> ml_collections.ConfigDict:
    method, preset, dataset = ((arg or "erm").split(",") + [None, None])[:3]
    return make(method, preset=preset or "paper", **({"dataset": dataset} if dataset else {}))

  return get_config


# field -> (the field whose value decides whether it is read, the values that read it). The
# attack options are read only when an attack runs (a non-empty eval.adv_eps), too.
_READ_WHEN = {"momentum": ("optimizer", ("sgd",)), "nesterov": ("optimizer", ("sgd",)),
              "lr_min": ("lr_schedule", ("cosine",)),
              "eval.published_dir": ("eval.corruptions", ("published",)),
              "eval.pgd_steps": ("eval.attack", ("pgd",)),
              "eval.pgd_restarts": ("eval.attack", ("pgd", "apgd")),
              "eval.apgd_steps": ("eval.attack", ("apgd", "suite")),
              "eval.square_queries": ("eval.attack", ("suite",))}
_ATTACK_OPTIONS = ("eval.attack", "eval.norm", "eval.pgd_steps", "eval.pgd_restarts",
                   "eval.apgd_steps", "eval.square_queries")


def not_applying(config: ml_collections.ConfigDict, field: str) -> str | None:
  """Why ``field`` (a dotted path) has no effect under ``config``; None when it applies."""
  if field.startswith("method_config."):
    if config.method not in methods.method_names():
      return None  # validate names the unknown --method
    read = methods.fields_read(config.method)
    if field[len("method_config."):] not in read:
      return f"method '{config.method}' does not read it (it reads {', '.join(read)})"
    return None
  if field in _ATTACK_OPTIONS and not len(config.eval.adv_eps):
    return ("no attack runs while eval.adv_eps is empty (to run one, set e.g. "
            "--config.eval.adv_eps=8/255)")
  selector, values = _READ_WHEN.get(field, (None, ()))
  if selector is not None and flatten(config)[selector] not in values:
    return f"only {selector}={' or '.join(values)} reads it"
  return None


# ----------------------------------------------------------------------------- validation

def _cross_checks(c: ml_collections.ConfigDict) -> None:
  if c.warmup_epochs >= c.num_epochs:
    raise ConfigError("warmup_epochs", f"must be < num_epochs ({c.num_epochs}), got "
                      f"{c.warmup_epochs} epochs")
  if c.lr_schedule == "cosine" and c.lr_min > c.learning_rate:
    raise ConfigError("lr_min", f"must be <= learning_rate ({c.learning_rate:g}) for the cosine "
                      f"schedule, got {c.lr_min:g}")
  big = [e for e in c.eval.adv_eps if e > 1]
  if big and c.eval.norm == "linf":
    raise ConfigError("eval.adv_eps", f"must be <= 1 with eval.norm=linf{_PIXELS}, got "
                      f"{big[0]:g}")
  if c.eval.frost_dir and c.eval.corruptions == "published":
    raise ConfigError("eval.frost_dir", "applies to generated corruptions (eval.corruptions="
                      "generated or refined), not published")
  names = tuple(c.eval.corruption_names)
  if "none" in names and len(names) > 1:
    raise ConfigError("eval.corruption_names", f"'none' (no corruption evaluation) cannot be "
                      f"combined with corruption names, got {names}")
  if names != ("none",) and not c.eval.severities:
    raise ConfigError("eval.severities", "must list at least one severity (1..5) when "
                      "corruptions are evaluated")
  if c.eval.corruptions == "published" and names != ("none",):
    if c.dataset not in ("cifar10", "cifar100"):
      raise ConfigError("eval.corruptions", "'published' needs dataset cifar10 or cifar100 (the "
                        f"published CIFAR-C arrays), got dataset '{c.dataset}'")


def method_config(config: ml_collections.ConfigDict) -> methods.MethodConfig:
  """``config.method_config`` as a ``drojax.methods.MethodConfig`` (registered fields too)."""
  return methods.MethodConfig.from_dict(config.method_config.to_dict())


def _check_method_factory(c: ml_collections.ConfigDict) -> None:
  """Builds the method once: the method layer's rules and the library's own checks of its
  hyper-parameters run now."""
  try:
    methods.get_method(c.method, method_config(c))
  except ConfigError as e:
    raise ConfigError(f"method_config.{e.field}", e.detail) from None
  except (ValueError, TypeError) as e:
    raise ConfigError("method_config", " ".join(str(e).split())) from None


def config_specs(config: ml_collections.ConfigDict) -> dict[str, Spec]:
  """The spec of every field (dotted path) of ``config``: ``FIELDS``', the method
  hyper-parameters' (``drojax.methods.field_specs()``, registered ones included) and those its
  experiment adds (``EXTRA_FIELDS`` beside its factory in ``experiments/configs/<experiment>.py``,
  ``{name: (default, spec)}``)."""
  extra = {}
  if config.get("experiment") in EXPERIMENTS:
    module = importlib.import_module(f"experiments.configs.{config.experiment}")
    extra = getattr(module, "EXTRA_FIELDS", {})
  return {**{k: spec for k, (_, spec) in {**FIELDS, **extra}.items()},
          **{f"method_config.{k}": v for k, v in methods.field_specs().items()}}


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of ``config`` (``config_specs``), the cross-field rules and the
  method's factory; raises ``ConfigError`` naming the first bad field (dotted path)."""
  check_fields(config, config_specs(config))
  _cross_checks(config)
  _check_method_factory(config)

