"""The method table: a training method is data, chosen by name outside ``jit``.

A method is an augmentation (:mod:`drojax.views`: the views trained on and the per-example
criterion over them) combined with an objective (:mod:`drojax.objectives`: how the per-example
losses become the scalar that is differentiated, with its own state). The table below lists
every combination that makes sense, each under the name users pass (``--method=dro_augmix``);
a combination that makes none (MART on mixed targets, an adversarial objective on AugMix's
three views) is absent rather than failing at trace time.

  objective / augmentation  plain    mixup           augmix           noisymix
  erm (mean)                erm      mixup           augmix           noisymix
  dro (W-DRO penalty)       dro      dro_mixup       dro_augmix       dro_noisymix
  var_dro                   var_dro  var_dro_mixup   var_dro_augmix   -
  kl_dro, cvar              kl_dro, cvar  -          -                -
  pgd_at, trades, mart      pgd_at, trades, mart  -  -                -

``get_method(name, config)`` builds one from ``MethodConfig``'s hyper-parameters (each method
reads the fields it needs); unknown names raise a ``ValueError`` listing the valid ones.
``register(name, factory)`` adds a user's own ``factory(config) -> Method``. The train step
(:mod:`drojax.train`) calls ``method.augment``, then ``method.objective.apply`` with the model
as closures that apply ``method.criterion``; it never branches on a method.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from drojax import objectives as _obj
from drojax import views as _views
# Re-exported: the building blocks a user's own method is made of.
from drojax.views import (AugmentFn, Batch, CriterionFn, Views,  # noqa: F401
                          cross_entropy_criterion, jsd_criterion, plain_views, smooth_targets,
                          views_to_model_batch)


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: augmentation, per-example criterion, and objective (with its state)."""

  name: str
  augment: AugmentFn
  criterion: CriterionFn
  objective: _obj.Objective
  description: str = ""
  augmentation: str = ""  # the table's augmentation name (plain, mixup, augmix, noisymix)
  objective_name: str = ""  # the table's objective name (erm, dro, var_dro, ...)


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """Hyper-parameters of every registered method; each method reads the fields it needs.

  Defaults follow ``shared/reference/recipes.md``.
  """

  # Loss
  label_smoothing: float = 0.0
  # W-DRO variation penalty (DRO-Augment)
  rho: float = 1.0
  q: float = 1.0
  norm: float = 2.0  # ground-cost norm; the penalty uses its dual
  penalty_mode: str = "forward_over_reverse"  # | "exact" (same gradient) | "finite_difference"
  penalty_subsample: float = 1.0  # fraction of the batch the penalty is taken on
  # Mixup
  mixup_alpha: float = 1.0
  # AugMix (+ JSD)
  augmix_width: int = 3
  augmix_depth: int = -1
  augmix_severity: int = 3
  augmix_alpha: float = 1.0
  augmix_all_ops: bool = False
  jsd_weight: float = 12.0
  # NoisyMix
  noisymix_add_noise: float = 0.1
  noisymix_mult_noise: float = 0.1
  noisymix_sparsity: float = 0.2
  noisymix_manifold: bool = True  # mix at a random one of {input, after stage 1..4}
  # KL-DRO / CVaR
  # 10, not 1: at the DRO-Augment recipe's SGD lr 0.1, temperatures 1, 2 and 5 diverged within
  # 10 steps and 10 trained (docs/reproduction.md, "KL-DRO").
  kl_temperature: float = 10.0
  cvar_alpha: float = 0.5
  # Var-DRO
  var_dro_ema: float = 0.1
  var_dro_eps_min: float = 0.0
  var_dro_eps_max: float = 1.0
  var_dro_warmup_steps: int = 0
  var_dro_ramp_steps: int = 0
  # Adversarial training (pgd_at, trades, mart): L-inf PGD in pixel units, CIFAR defaults
  adv_eps: float = 8 / 255
  adv_steps: int = 10
  adv_step_size: float = 2 / 255
  trades_beta: float = 6.0
  mart_beta: float = 6.0


MethodFactory = Callable[[MethodConfig], Method]
_REGISTRY: dict[str, MethodFactory] = {}


def register(name: str, factory: MethodFactory, *, overwrite: bool = False) -> None:
  """Adds a method to the table.

  Args:
    name: the name users pass (``--method=name``): lowercase letters, digits and ``_``.
    factory: ``factory(config: MethodConfig) -> Method``, called outside ``jit``.
    overwrite: allow replacing an existing entry (otherwise a ``ValueError``).
  """
  if not isinstance(name, str) or not name or not all(c.islower() or c.isdigit() or c == "_"
                                                       for c in name):
    raise ValueError(f"method name must be a non-empty lowercase identifier, got {name!r}")
  if not callable(factory):
    raise TypeError(f"factory must be callable (config -> Method), got {type(factory).__name__}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
  _REGISTRY[name] = factory


def method_names() -> list[str]:
  """The registered method names, sorted."""
  return sorted(_REGISTRY)


def get_method(name: str, config: MethodConfig = MethodConfig()) -> Method:
  """Builds the method registered as ``name`` with ``config``'s hyper-parameters.

  Raises:
    ValueError: unknown ``name`` (the message lists the valid names and the closest match).
    TypeError: ``config`` is not a ``MethodConfig``.

  Example:
    >>> m = get_method("dro", MethodConfig(rho=0.5))
    >>> m.name, m.augmentation, m.objective_name
    ('dro', 'plain', 'dro')
  """
  if not isinstance(config, MethodConfig):
    raise TypeError(f"config must be a MethodConfig, got {type(config).__name__}")
  if name not in _REGISTRY:
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}.{hint}")
  method = _REGISTRY[name](config)
  if not isinstance(method, Method):
    raise TypeError(f"factory of {name!r} returned {type(method).__name__}, expected a Method")
  return method


# ----------------------------------------------------------------------------------------------
# The table: augmentations x objectives.

# name -> (augment factory, criterion factory), each a function of the config.
AUGMENTATIONS: dict[str, tuple[Callable, Callable]] = {
    "plain": (_views.plain_augment, lambda c: _views.cross_entropy_criterion),
    "mixup": (_views.mixup_augment, lambda c: _views.cross_entropy_criterion),
    "augmix": (_views.augmix_augment, lambda c: _views.jsd_criterion(c.jsd_weight)),
    "noisymix": (_views.noisymix_augment, lambda c: _views.jsd_criterion(c.jsd_weight)),
}

# name -> config -> Objective.
OBJECTIVES: dict[str, Callable[[MethodConfig], _obj.Objective]] = {
    "erm": lambda c: _obj.mean(),
    "dro": lambda c: _obj.wdro(rho=c.rho, q=c.q, norm=c.norm, penalty_mode=c.penalty_mode,
                               penalty_subsample=c.penalty_subsample),
    "var_dro": lambda c: _obj.var_dro(eps_min=c.var_dro_eps_min, eps_max=c.var_dro_eps_max,
                                      warmup_steps=c.var_dro_warmup_steps,
                                      ramp_steps=c.var_dro_ramp_steps, ema=c.var_dro_ema),
    "kl_dro": lambda c: _obj.kl_dro(temperature=c.kl_temperature),
    "cvar": lambda c: _obj.cvar(alpha=c.cvar_alpha),
    "pgd_at": lambda c: _obj.pgd_at(eps=c.adv_eps, steps=c.adv_steps,
                                    step_size=c.adv_step_size),
    "trades": lambda c: _obj.trades(beta=c.trades_beta, eps=c.adv_eps, steps=c.adv_steps,
                                    step_size=c.adv_step_size),
    "mart": lambda c: _obj.mart(beta=c.mart_beta, eps=c.adv_eps, steps=c.adv_steps,
                                step_size=c.adv_step_size),
}

# method name -> (augmentation, objective, description).
TABLE: dict[str, tuple[str, str, str]] = {
    "erm": ("plain", "erm", "empirical risk minimization (mean cross-entropy)"),
    "dro": ("plain", "dro", "W-DRO: mean loss + rho * variation penalty"),
    "var_dro": ("plain", "var_dro",
                "Var-DRO: variance-tracked radii, water-filling weights over the global batch"),
    "kl_dro": ("plain", "kl_dro", "KL-DRO (log-sum-exp)"),
    "cvar": ("plain", "cvar", "CVaR of the per-example losses"),
    "pgd_at": ("plain", "pgd_at", "PGD adversarial training (Madry et al. 2018)"),
    "trades": ("plain", "trades", "TRADES: CE + beta * KL(clean || adversarial)"),
    "mart": ("plain", "mart", "MART: boosted CE + beta * weighted KL on PGD examples"),
    "mixup": ("mixup", "erm", "Mixup (mean cross-entropy on mixed targets)"),
    "augmix": ("augmix", "erm", "AugMix with the JSD consistency loss"),
    "noisymix": ("noisymix", "erm", "NoisyMix: AugMix/JSD views, manifold mixup and sparse noise"),
    "dro_mixup": ("mixup", "dro", "Mixup + W-DRO penalty on the mixed images"),
    "dro_augmix": ("augmix", "dro", "AugMix/JSD + W-DRO penalty on all three views"),
    "dro_noisymix": ("noisymix", "dro", "NoisyMix + W-DRO penalty on all three views"),
    "var_dro_mixup": ("mixup", "var_dro", "Mixup + Var-DRO example weights"),
    "var_dro_augmix": ("augmix", "var_dro", "AugMix/JSD + Var-DRO example weights"),
}


def build_method(name: str, augmentation: str, objective: str, config: MethodConfig,
                 description: str = "") -> Method:
  """The method ``augmentation x objective`` under ``name`` (names from the two tables)."""
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
  if augmentation == "noisymix" and objective == "dro" and config.penalty_subsample < 1.0:
    raise ValueError(f"penalty_subsample must be 1.0 with {name!r}: NoisyMix mixes hidden layers "
                     f"with a plan over the whole batch, got {config.penalty_subsample}")
  augment, criterion = AUGMENTATIONS[augmentation]
  return Method(name, augment(config), criterion(config), OBJECTIVES[objective](config),
                description=description, augmentation=augmentation, objective_name=objective)


def _table_factory(name: str) -> MethodFactory:
  augmentation, objective, description = TABLE[name]
  return lambda config: build_method(name, augmentation, objective, config, description)


for _name in TABLE:
  register(_name, _table_factory(_name))
del _name
