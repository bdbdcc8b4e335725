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
  group_dro, vrex, irm,     group_dro, vrex, irm,  -  -                -
  var_dro_vrex, jtt         var_dro_vrex, jtt

``get_method(name, config)`` builds one from ``MethodConfig``'s hyper-parameters (each method
reads the fields it needs); unknown names raise a ``ValueError`` listing the valid ones.
``register(name, factory)`` adds a user's own ``factory(config) -> Method``. The train step
(:mod:`drojax.train`) calls ``method.augment``, then ``method.objective.apply`` with the model
as closures that apply ``method.criterion``; it never branches on a method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from drojax import objectives as _obj
from drojax import views as _views
from drojax import wdro as _wdro
from drojax.specs import (Bool, Choice, ConfigError, Custom, Int, Real, Spec, Tuple, for_default,
                          suggest)
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


_PIXELS = " (pixel units in [0, 1]: write 8/255, not 8)"


def _field(default: Any, spec: Spec) -> Any:
  """A ``MethodConfig`` field: its default and the values it accepts."""
  return dataclasses.field(default=default, metadata={"spec": spec})


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """Hyper-parameters of every registered method; each method reads the fields it needs.

  Each field carries its spec (type and range, :mod:`drojax.specs`): a config holding a bad
  value is refused at construction, naming the field. The fields a user's method registers
  (``register(..., fields=)``) are read as attributes too (``config.focal_gamma``); their values
  are in ``extra`` (a mapping, or ``(name, value)`` pairs). Defaults follow
  ``shared/reference/recipes.md``.
  """

  # Loss
  label_smoothing: float = _field(0.0, Real(lo=0.0, hi=1.0, hi_open=True))
  # W-DRO variation penalty (DRO-Augment)
  rho: float = _field(1.0, Real(lo=0.0))
  q: float = _field(1.0, Real(lo=1.0, allow_inf=True))
  # ground-cost norm (the penalty uses its dual), spelled as the attacks' norm
  norm: str = _field("l2", Custom(_wdro.norm_exponent, _wdro.NORM_SPELLING))
  # | "exact" (same gradient) | "finite_difference"
  penalty_mode: str = _field("forward_over_reverse", Choice(_wdro.PENALTY_MODES))
  # the fraction of the batch the penalty is taken on
  penalty_subsample: float = _field(1.0, Real(lo=0.0, hi=1.0, lo_open=True))
  # Mixup
  mixup_alpha: float = _field(1.0, Real(lo=0.0, lo_open=True))
  # AugMix (+ JSD)
  augmix_width: int = _field(3, Int(lo=1))
  augmix_depth: int = _field(-1, Int(lo=1, also=(-1,)))  # -1: random in 1..3
  augmix_severity: int = _field(3, Int(lo=1, hi=10))
  augmix_alpha: float = _field(1.0, Real(lo=0.0, lo_open=True))
  augmix_all_ops: bool = _field(False, Bool())
  jsd_weight: float = _field(12.0, Real(lo=0.0))
  # NoisyMix
  noisymix_add_noise: float = _field(0.1, Real(lo=0.0))
  noisymix_mult_noise: float = _field(0.1, Real(lo=0.0))
  noisymix_sparsity: float = _field(0.2, Real(lo=0.0, hi=1.0))
  noisymix_manifold: bool = _field(True, Bool())  # mix at a random one of {input, stage 1..4}
  # KL-DRO / CVaR
  # 10, not 1: at the DRO-Augment recipe's SGD lr 0.1, temperatures 1, 2 and 5 diverged within
  # 10 steps and 10 trained (docs/reproduction.md, "KL-DRO").
  kl_temperature: float = _field(10.0, Real(lo=0.0, lo_open=True))
  cvar_alpha: float = _field(0.5, Real(lo=0.0, hi=1.0, lo_open=True))
  # Var-DRO
  var_dro_ema: float = _field(0.1, Real(lo=0.0, hi=1.0, lo_open=True))
  var_dro_eps_min: float = _field(0.0, Real(lo=0.0, allow_inf=True))
  var_dro_eps_max: float = _field(1.0, Real(lo=0.0, allow_inf=True))
  var_dro_warmup_steps: int = _field(0, Int(lo=0))
  var_dro_ramp_steps: int = _field(0, Int(lo=0))
  # ramp (the paper's) | loss: the cap also scaled by the tracked loss (drojax.objectives.var_dro)
  var_dro_schedule: str = _field("ramp", Choice(("ramp", "loss")))
  # Adversarial training (pgd_at, trades, mart): L-inf PGD in pixel units, CIFAR defaults
  adv_eps: float = _field(8 / 255, Real(lo=0.0, hi=1.0, hint=_PIXELS))
  adv_steps: int = _field(10, Int(lo=1))
  adv_step_size: float = _field(2 / 255, Real(lo=0.0))
  trades_beta: float = _field(6.0, Real(lo=0.0))
  mart_beta: float = _field(6.0, Real(lo=0.0))
  # Group shift (group_dro, vrex, irm, var_dro_vrex). 0 / (): from the training data (its
  # environments, else its groups), filled in by the experiments before the method is built.
  num_groups: int = _field(0, Int(lo=0))
  num_environments: int = _field(0, Int(lo=0))
  group_counts: tuple = _field((), Tuple(item=Int(lo=1)))  # training examples per group
  group_dro_step_size: float = _field(0.01, Real(lo=0.0, lo_open=True))  # Sagawa et al.
  group_dro_adjustment: float = _field(0.0, Real(lo=0.0))  # C in C / sqrt(n_g)
  # Penalty weight lambda from step penalty_anneal_steps on (1 before), as in the papers' code.
  vrex_penalty_weight: float = _field(1e4, Real(lo=0.0))
  irm_penalty_weight: float = _field(1e4, Real(lo=0.0))
  penalty_anneal_steps: int = _field(100, Int(lo=0))
  # JTT (Liu et al. 2021): ERM for jtt_epochs, then its training errors weighted jtt_lambda_up.
  jtt_epochs: int = _field(1, Int(lo=1))
  jtt_lambda_up: float = _field(6.0, Real(lo=1.0))
  # The values of fields registered by users' methods, as sorted (name, value) pairs.
  extra: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    extra = dict(self.extra)
    object.__setattr__(self, "extra", tuple(sorted(extra.items())))
    builtin = [(f.name, getattr(self, f.name)) for f in _BUILTIN_FIELDS]
    for name, value in builtin + list(self.extra):
      err = _spec_of(name).check(value)
      if err:
        raise ConfigError(name, err)

  def __getattr__(self, name: str) -> Any:
    # Only reached for names that are not built-in fields: a registered user field.
    if name in _USER_FIELDS:
      return dict(self.__dict__.get("extra", ())).get(name, _USER_FIELDS[name][0])
    raise AttributeError(f"MethodConfig has no field {name!r}.{suggest(name, field_specs())}")

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "MethodConfig":
    """A config from ``{field: value}`` (built-in and registered fields alike)."""
    builtin = {f.name for f in _BUILTIN_FIELDS}
    return cls(**{k: v for k, v in values.items() if k in builtin},
               extra={k: v for k, v in values.items() if k not in builtin})

  def to_dict(self) -> dict[str, Any]:
    """Every field's value, registered fields included (their defaults when unset)."""
    out = {f.name: getattr(self, f.name) for f in _BUILTIN_FIELDS}
    return out | {name: getattr(self, name) for name in _USER_FIELDS}


_BUILTIN_FIELDS = tuple(f for f in dataclasses.fields(MethodConfig) if f.name != "extra")
# name -> (default, spec) of the fields users' methods registered.
_USER_FIELDS: dict[str, tuple[Any, Spec]] = {}


def _spec_of(name: str) -> Spec:
  specs = field_specs()
  if name not in specs:
    raise ConfigError(name, "no such MethodConfig field (a user's method registers its own with "
                      f"register(..., fields=)).{suggest(name, specs)}")
  return specs[name]


def field_specs() -> dict[str, Spec]:
  """Every method hyper-parameter's spec: ``MethodConfig``'s fields and registered ones."""
  return ({f.name: f.metadata["spec"] for f in _BUILTIN_FIELDS}
          | {name: spec for name, (_, spec) in _USER_FIELDS.items()})


def field_defaults() -> dict[str, Any]:
  """Every method hyper-parameter's default, registered ones included."""
  return MethodConfig().to_dict()


MethodFactory = Callable[[MethodConfig], Method]
_REGISTRY: dict[str, MethodFactory] = {}
_READS: dict[str, tuple[str, ...]] = {}  # method -> the fields its factory reads


def _add_fields(fields: Mapping[str, Any]) -> None:
  builtin = {f.name for f in _BUILTIN_FIELDS}
  declared = {}
  for name, value in fields.items():
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
      raise ValueError(f"field name must be a public identifier, got {name!r}")
    if name in builtin:
      raise ValueError(f"field {name!r} is a built-in MethodConfig field: list it in reads=, "
                       "not in fields=")
    default, spec = value if isinstance(value, tuple) else (value, for_default(value))
    if not isinstance(spec, Spec):
      raise TypeError(f"fields[{name!r}] must be a default or (default, Spec), got {value!r}")
    err = spec.check(default)
    if err:
      raise ValueError(f"the default of field {name!r} is refused by its own spec: {err}")
    if _USER_FIELDS.get(name, (default, spec)) != (default, spec):
      raise ValueError(f"field {name!r} is already registered with default/spec "
                       f"{_USER_FIELDS[name]}, got {(default, spec)}")
    declared[name] = (default, spec)
  _USER_FIELDS.update(declared)


def register(name: str, factory: MethodFactory, *, fields: Mapping[str, Any] | None = None,
             reads: Sequence[str] = (), overwrite: bool = False) -> None:
  """Adds a method to the table, with the hyper-parameters it reads.

  Args:
    name: the name users pass (``--method=name``): lowercase letters, digits and ``_``.
    factory: ``factory(config: MethodConfig) -> Method``, called outside ``jit``.
    fields: the method's own hyper-parameters, ``{name: default}`` (typed by the default: any
      value of its type) or ``{name: (default, spec)}`` with a :mod:`drojax.specs` spec for a
      range or choices (``{"focal_gamma": (2.0, specs.Real(lo=0.0))}``). The factory reads them
      as ``config.focal_gamma``; the CLIs parse, check, record and document them like
      ``MethodConfig``'s own, and refuse them for methods that do not read them. Two methods
      may share a field when they declare it identically.
    reads: the built-in ``MethodConfig`` fields the factory also reads (``("label_smoothing",)``).
    overwrite: allow replacing an existing entry (otherwise a ``ValueError``).

  Example:
    >>> register("my_cvar", lambda c: build_method("my_cvar", "plain", "cvar", c),
    ...          reads=("label_smoothing", "cvar_alpha"))
    >>> fields_read("my_cvar")
    ('label_smoothing', 'cvar_alpha')
    >>> unregister("my_cvar")
  """
  if not isinstance(name, str) or not name or not all(c.islower() or c.isdigit() or c == "_"
                                                       for c in name):
    raise ValueError(f"method name must be a non-empty lowercase identifier, got {name!r}")
  if not callable(factory):
    raise TypeError(f"factory must be callable (config -> Method), got {type(factory).__name__}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
  builtin = {f.name for f in _BUILTIN_FIELDS}
  if isinstance(reads, str) or not set(reads) <= builtin:
    bad = [reads] if isinstance(reads, str) else sorted(set(reads) - builtin)
    raise ValueError(f"reads must list built-in MethodConfig fields, got {bad}"
                     f"{suggest(bad[0], builtin)}")
  _add_fields(dict(fields or {}))
  _REGISTRY[name] = factory
  _READS[name] = tuple(reads) + tuple(fields or ())


def unregister(name: str) -> None:
  """Removes a registered method (and the fields only it declared)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}")
  del _REGISTRY[name]
  own = set(_READS.pop(name)) & set(_USER_FIELDS)
  for field in own - {f for reads in _READS.values() for f in reads}:
    del _USER_FIELDS[field]


def method_names() -> list[str]:
  """The registered method names, sorted."""
  return sorted(_REGISTRY)


def fields_read(name: str) -> tuple[str, ...]:
  """The ``MethodConfig`` fields (built-in and registered) method ``name`` reads."""
  _check_name(name)
  return _READS[name]


def needs(name: str) -> str | None:
  """``'group'``, ``'environment'`` or None: the ids method ``name``'s objective reads per batch
  (``drojax.groups.check_training_data`` checks the training data has them)."""
  _check_name(name)
  return NEEDS.get(TABLE[name][1]) if name in TABLE else None


def two_stage(name: str) -> bool:
  """Whether method ``name`` trains an identification model first (JTT)."""
  _check_name(name)
  return name in TABLE and TABLE[name][1] == "jtt"


def _check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}."
                     f"{suggest(name, method_names())}")


def get_method(name: str, config: MethodConfig = MethodConfig()) -> Method:
  """Builds the method registered as ``name`` with ``config``'s hyper-parameters.

  Raises:
    ValueError: unknown ``name`` (the message lists the valid names and the closest match); a
      combination rule refuses a field's value (a ``ConfigError`` naming the field).
    TypeError: ``config`` is not a ``MethodConfig``.

  Example:
    >>> m = get_method("dro", MethodConfig(rho=0.5))
    >>> m.name, m.augmentation, m.objective_name
    ('dro', 'plain', 'dro')
  """
  if not isinstance(config, MethodConfig):
    raise TypeError(f"config must be a MethodConfig, got {type(config).__name__}")
  _check_name(name)
  method = _REGISTRY[name](config)
  if not isinstance(method, Method):
    raise TypeError(f"factory of {name!r} returned {type(method).__name__}, expected a Method")
  return method


# ----------------------------------------------------------------------------------------------
# The table: augmentations x objectives.

_AUGMIX = ("augmix_width", "augmix_depth", "augmix_severity", "augmix_alpha", "augmix_all_ops",
           "jsd_weight")
_ADV = ("adv_eps", "adv_steps", "adv_step_size")
_VAR_DRO = ("var_dro_ema", "var_dro_eps_min", "var_dro_eps_max", "var_dro_warmup_steps",
            "var_dro_ramp_steps", "var_dro_schedule")
_VREX = ("num_environments", "vrex_penalty_weight", "penalty_anneal_steps")


def _adjustments(c: MethodConfig):
  """Sagawa et al.'s C / sqrt(n_g) from ``group_counts`` (None when C is 0)."""
  if not c.group_dro_adjustment:
    return None
  if len(c.group_counts) != c.num_groups:
    raise ConfigError("group_counts", f"the group adjustment needs the {c.num_groups} training "
                      f"group sizes, got {tuple(c.group_counts)}")
  from drojax.groups import group_adjustments

  return group_adjustments(c.group_counts, adjustment=c.group_dro_adjustment)

# name -> (augment factory, criterion factory, the fields they read); factories of the config.
AUGMENTATIONS: dict[str, tuple[Callable, Callable, tuple[str, ...]]] = {
    "plain": (_views.plain_augment, lambda c: _views.cross_entropy_criterion,
              ("label_smoothing",)),
    "mixup": (_views.mixup_augment, lambda c: _views.cross_entropy_criterion,
              ("label_smoothing", "mixup_alpha")),
    "augmix": (_views.augmix_augment, lambda c: _views.jsd_criterion(c.jsd_weight),
               ("label_smoothing",) + _AUGMIX),
    "noisymix": (_views.noisymix_augment, lambda c: _views.jsd_criterion(c.jsd_weight),
                 ("label_smoothing",) + _AUGMIX + ("mixup_alpha", "noisymix_add_noise",
                                                   "noisymix_mult_noise", "noisymix_sparsity",
                                                   "noisymix_manifold")),
}

# name -> (config -> Objective, the fields it reads).
OBJECTIVES: dict[str, tuple[Callable[[MethodConfig], _obj.Objective], tuple[str, ...]]] = {
    "erm": (lambda c: _obj.mean(), ()),
    "dro": (lambda c: _obj.wdro(rho=c.rho, q=c.q, norm=c.norm, penalty_mode=c.penalty_mode,
                                penalty_subsample=c.penalty_subsample),
            ("rho", "q", "norm", "penalty_mode", "penalty_subsample")),
    "var_dro": (lambda c: _obj.var_dro(eps_min=c.var_dro_eps_min, eps_max=c.var_dro_eps_max,
                                       warmup_steps=c.var_dro_warmup_steps,
                                       ramp_steps=c.var_dro_ramp_steps, ema=c.var_dro_ema,
                                       schedule=c.var_dro_schedule), _VAR_DRO),
    "kl_dro": (lambda c: _obj.kl_dro(temperature=c.kl_temperature), ("kl_temperature",)),
    "cvar": (lambda c: _obj.cvar(alpha=c.cvar_alpha), ("cvar_alpha",)),
    "pgd_at": (lambda c: _obj.pgd_at(eps=c.adv_eps, num_steps=c.adv_steps,
                                     step_size=c.adv_step_size), _ADV),
    "trades": (lambda c: _obj.trades(beta=c.trades_beta, eps=c.adv_eps, num_steps=c.adv_steps,
                                     step_size=c.adv_step_size), _ADV + ("trades_beta",)),
    "mart": (lambda c: _obj.mart(beta=c.mart_beta, eps=c.adv_eps, num_steps=c.adv_steps,
                                 step_size=c.adv_step_size), _ADV + ("mart_beta",)),
    "group_dro": (lambda c: _obj.group_dro(
        num_groups=c.num_groups, step_size=c.group_dro_step_size,
        adjustments=_adjustments(c)), ("num_groups", "group_counts", "group_dro_step_size",
                                       "group_dro_adjustment")),
    "vrex": (lambda c: _obj.vrex(num_environments=c.num_environments,
                                 penalty_weight=c.vrex_penalty_weight,
                                 anneal_steps=c.penalty_anneal_steps), _VREX),
    "irm": (lambda c: _obj.irm(num_environments=c.num_environments,
                               penalty_weight=c.irm_penalty_weight,
                               anneal_steps=c.penalty_anneal_steps),
            ("num_environments", "irm_penalty_weight", "penalty_anneal_steps")),
    "var_dro_vrex": (lambda c: _obj.var_dro_vrex(
        num_environments=c.num_environments, penalty_weight=c.vrex_penalty_weight,
        anneal_steps=c.penalty_anneal_steps, eps_min=c.var_dro_eps_min,
        eps_max=c.var_dro_eps_max, warmup_steps=c.var_dro_warmup_steps,
        ramp_steps=c.var_dro_ramp_steps, ema=c.var_dro_ema, schedule=c.var_dro_schedule),
        _VREX + _VAR_DRO),
    # JTT's identification stage; experiments.groups runs the upweighted second stage.
    "jtt": (lambda c: _obj.mean(), ("jtt_epochs", "jtt_lambda_up")),
}
# The per-example ids an objective needs in every batch ("group" or "environment"; an
# environment objective on data without environments uses the groups).
NEEDS: dict[str, str] = {"group_dro": "group", "vrex": "environment", "irm": "environment",
                         "var_dro_vrex": "environment"}

# Rules between fields, checked when a method is built: (augmentation or None for any,
# objective) -> [(field, rule(config) -> what is wrong or None)]. The field is the one the
# message names; ``pinned`` lists the rules that fix a field to one value.
RULES: dict[tuple[str | None, str], list[tuple[str, Callable[[MethodConfig], str | None]]]] = {
    (None, "var_dro"): [("var_dro_eps_min", lambda c: None if c.var_dro_eps_min
                         <= c.var_dro_eps_max else f"must be <= var_dro_eps_max "
                         f"({c.var_dro_eps_max:g}), got {c.var_dro_eps_min:g}")],
}
# (augmentation, objective) -> {field: (the one value allowed, why)}.
PINNED: dict[tuple[str, str], dict[str, tuple[Any, str]]] = {
    ("noisymix", "dro"): {"penalty_subsample": (1.0, "NoisyMix mixes hidden layers with a plan "
                                                "over the whole batch")},
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
    "group_dro": ("plain", "group_dro", "group DRO: exponentiated-gradient group weights "
                  "(Sagawa et al. 2020); needs group labels"),
    "vrex": ("plain", "vrex", "V-REx: mean + variance of the environment risks (Krueger et al.)"),
    "irm": ("plain", "irm", "IRMv1: squared dummy-classifier gradient per environment"),
    "var_dro_vrex": ("plain", "var_dro_vrex", "Var-DRO example weights + the V-REx penalty"),
    "jtt": ("plain", "jtt", "JTT: ERM for jtt_epochs, then a new model with the first one's "
            "training errors weighted jtt_lambda_up (Liu et al. 2021)"),
}


def pinned(name: str) -> dict[str, tuple[Any, str]]:
  """The fields method ``name`` fixes to one value, ``{field: (value, why)}`` (table methods)."""
  _check_name(name)
  return dict(PINNED.get(TABLE[name][:2], {})) if name in TABLE else {}


def check_rules(name: str, augmentation: str, objective: str, config: MethodConfig) -> None:
  """Raises a ``ConfigError`` naming the field when ``config`` breaks a rule of the combination."""
  rules = RULES.get((None, objective), []) + RULES.get((augmentation, objective), [])
  for field, (value, why) in PINNED.get((augmentation, objective), {}).items():
    rules.append((field, lambda c, f=field, v=value, w=why: None if getattr(c, f) == v else
                  f"must be {v} with {name!r} ({w}), got {getattr(c, f)!r}"))
  for field, rule in rules:
    err = rule(config)
    if err:
      raise ConfigError(field, err)


def build_method(name: str, augmentation: str, objective: str, config: MethodConfig, *,
                 description: str = "") -> Method:
  """The method ``augmentation x objective`` under ``name`` (names from the two tables)."""
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
  check_rules(name, augmentation, objective, config)
  augment, criterion, _ = AUGMENTATIONS[augmentation]
  return Method(name, augment(config), criterion(config), OBJECTIVES[objective][0](config),
                description=description, augmentation=augmentation, objective_name=objective)


def _table_factory(name: str) -> MethodFactory:
  augmentation, objective, description = TABLE[name]
  return lambda config: build_method(name, augmentation, objective, config,
                                    description=description)


for _name, (_aug, _objective, _) in TABLE.items():
  register(_name, _table_factory(_name), reads=AUGMENTATIONS[_aug][2] + OBJECTIVES[_objective][1])
del _name, _aug, _objective
