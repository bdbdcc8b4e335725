"""The method table: a training method is data, chosen by name outside ``jit``.

A ``Method`` bundles three pure functions; the train step calls them in order and never
branches on a method's name:

1. ``augment(key, batch, num_classes) -> Views``: the views trained on (1 for plain/mixup,
   3 for AugMix/JSD), their soft targets, and an optional hidden-layer ``MixPlan``.
2. ``criterion(logits, targets) -> [B]``: the per-example training loss of example ``i``
   given the logits of all its views (cross-entropy, or cross-entropy + JSD consistency).
3. ``objective(loss_fn, images, targets, ctx) -> (scalar, ObjectiveAux)``: how per-example
   losses become the scalar that is differentiated (mean, + W-DRO penalty, Var-DRO weights,
   KL-DRO, CVaR). ``loss_fn(images, targets) -> (losses [B], model_aux)`` is built by the
   train step from the model and ``criterion``; objectives may call it more than once
   (the W-DRO penalty differentiates it with respect to ``images``).

Shapes (per device, B examples, V views, K classes); images are float32 NHWC in [0, 1]:
  ``Views.images``   ``[B, V, H, W, C]`` example-major, so a per-example input-gradient norm
                     covers all of an example's views together.
  model input        ``[V * B, H, W, C]`` view-major (``images.swapaxes(0, 1).reshape``):
                     rows ``v*B .. v*B + B - 1`` are view ``v``; ``MixPlan`` arrays are
                     ``[V * B]`` in this order.
  ``Views.targets``  ``[B, K]`` float32 soft targets (one-hot, smoothed or mixed).
  logits             ``[V * B, K]`` in the model-input order.

Objectives return a scalar whose ``lax.pmean`` over ``ctx.axis_name`` is the global-batch
objective: either the local contribution (``mean(losses)``: the mean over devices is the global
mean, as ``drojax.losses.wdro_loss`` does) or a value that is already global (Var-DRO, KL-DRO and
CVaR gather the batch's losses over the mesh and return the same scalar on every device). The
train step differentiates ``pmean(objective)``, so both give global-batch gradients.

Methods are looked up with ``get_method(name, config)``; unknown names raise a ``ValueError``
listing the valid ones. New methods are added with ``register(name, factory)`` where
``factory(config: MethodConfig) -> Method``; :mod:`drojax.augmented_methods` registers the
augmentation-based ones (mixup, augmix, noisymix and their DRO combinations).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from drojax import losses as _losses
from drojax import weighting as _weighting
from drojax.augment.mixing import MixPlan


class Batch(NamedTuple):
  """One (per-device) training batch after decoding, before method augmentation."""

  images: jax.Array  # [B, H, W, C] float32 in [0, 1] (already cropped/flipped)
  labels: jax.Array  # [B] int32
  ids: jax.Array  # [B] int32 dataset example ids


class Views(NamedTuple):
  """What a method trains on for one batch."""

  images: jax.Array  # [B, V, H, W, C] float32
  targets: jax.Array  # [B, K] float32, rows sum to 1
  mix: MixPlan | None = None  # hidden-layer mixing plan over the [V * B] model batch


class ObjectiveContext(NamedTuple):
  """Everything an objective may need besides the loss function."""

  key: jax.Array  # PRNG key for the objective's own randomness (penalty subsampling)
  step: jax.Array  # [] int32 optimizer step (schedules such as Var-DRO's eps_max ramp)
  ids: jax.Array  # [B] int32 example ids
  tracker: Any  # Var-DRO variance tracker state, or None when the method does not use one
  axis_name: str | None  # mesh axis to gather over (global-batch objectives), or None


class ObjectiveAux(NamedTuple):
  """Diagnostics returned next to the scalar objective."""

  losses: jax.Array  # [B] per-example training losses (unweighted)
  model_aux: Any  # what loss_fn returned as aux for the unperturbed call (e.g. batch stats)
  metrics: dict[str, jax.Array]  # scalar diagnostics: penalty, weight entropy, ...


AugmentFn = Callable[[jax.Array, Batch, int], Views]
CriterionFn = Callable[[jax.Array, jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
ObjectiveFn = Callable[[LossFn, jax.Array, jax.Array, ObjectiveContext],
                       tuple[jax.Array, ObjectiveAux]]


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: augmentation, per-example criterion, and robust objective."""

  name: str
  augment: AugmentFn
  criterion: CriterionFn
  objective: ObjectiveFn
  uses_tracker: bool = False  # True when the objective reads/updates the Var-DRO tracker
  description: str = ""
  tracker_ema: float = 0.1  # EMA rate of the Var-DRO tracker update (MethodConfig.var_dro_ema)


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
  penalty_mode: str = "exact"  # "exact" | "forward_over_reverse" | "finite_difference"
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
    >>> m.name, m.uses_tracker
    ('dro', False)
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
# Building blocks: augmentation, criterion.


def smooth_targets(labels: jax.Array, num_classes: int, label_smoothing: float = 0.0) -> jax.Array:
  r"""One-hot targets ``[B, K]`` with label smoothing: :math:`(1 - s)\,e_y + s / K`.

  Example:
    >>> smooth_targets(jnp.array([1]), 4, 0.2).tolist()
    [[0.05000000074505806, 0.8500000238418579, 0.05000000074505806, 0.05000000074505806]]
  """
  if not 0.0 <= label_smoothing <= 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return (1.0 - label_smoothing) * onehot + label_smoothing / num_classes


def plain_views(key: jax.Array, batch: Batch, num_classes: int, *,
                label_smoothing: float = 0.0) -> Views:
  """The identity augmentation: one view (``[B, 1, H, W, C]``) and (smoothed) one-hot targets.

  ``key`` is unused (kept for the ``AugmentFn`` signature).

  Example:
    >>> b = Batch(jnp.zeros((2, 4, 4, 3)), jnp.array([0, 1]), jnp.array([5, 6]))
    >>> v = plain_views(None, b, 3)
    >>> v.images.shape, v.targets.shape, v.mix is None
    ((2, 1, 4, 4, 3), (2, 3), True)
  """
  del key
  return Views(images=batch.images[:, None], targets=smooth_targets(
      batch.labels, num_classes, label_smoothing), mix=None)


def views_to_model_batch(images: jax.Array) -> jax.Array:
  """``[B, V, H, W, C]`` example-major views -> ``[V * B, H, W, C]`` view-major model input."""
  b, v = images.shape[:2]
  return jnp.swapaxes(images, 0, 1).reshape((v * b,) + images.shape[2:])


def cross_entropy_criterion(logits: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Per-example cross-entropy averaged over views: :math:`\frac1V \sum_v CE(z_{v,i}, t_i)`.

  Args:
    logits: ``[V * B, K]`` view-major logits.
    targets: ``[B, K]`` soft targets.

  Returns:
    ``[B]`` losses.

  Example:
    >>> cross_entropy_criterion(jnp.zeros((2, 4)), jnp.full((2, 4), 0.25)).shape
    (2,)
  """
  b, k = targets.shape
  if logits.ndim != 2 or logits.shape[1] != k or logits.shape[0] % b:
    raise ValueError(f"logits must be [V * B, K] = [V * {b}, {k}], got {logits.shape}")
  per_view = logits.reshape((logits.shape[0] // b, b, k))
  ce = jax.vmap(lambda z: _losses.cross_entropy(z, targets))(per_view)
  return jnp.mean(ce, axis=0)


# ----------------------------------------------------------------------------------------------
# Objectives.


def _all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Concatenates ``x [B, ...]`` over the mesh axis (device order); identity without one.

  Built from ``psum`` of zero-padded slots, so the result is device-invariant (equal on every
  device) and differentiable: the cotangent of a slot flows back to the device that owns it.
  """
  if axis_name is None:
    return x
  n = jax.lax.axis_size(axis_name)
  b = x.shape[0]
  slot = jax.lax.axis_index(axis_name) * b
  padded = jnp.zeros((n * b,) + x.shape[1:], x.dtype)
  padded = jax.lax.dynamic_update_slice_in_dim(padded, x, slot, axis=0)
  return jax.lax.psum(padded, axis_name)


def local_slice(x: jax.Array, axis_name: str | None, local_size: int) -> jax.Array:
  """This device's ``[local_size, ...]`` slice of a gathered ``[n * local_size, ...]`` array."""
  if axis_name is None:
    return x
  start = jax.lax.axis_index(axis_name) * local_size
  return jax.lax.dynamic_slice_in_dim(x, start, local_size, axis=0)


def _entropy(w: jax.Array) -> jax.Array:
  return -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0))


def mean_objective() -> ObjectiveFn:
  """ERM: the mean per-example loss (local; its ``pmean`` is the global mean)."""

  def objective(loss_fn, images, targets, ctx):
    del ctx
    losses, model_aux = loss_fn(images, targets)
    return jnp.mean(losses), ObjectiveAux(losses, model_aux, {})

  return objective


def wdro_objective(config: MethodConfig) -> ObjectiveFn:
  r"""DRO-Augment: mean loss + ``rho`` x variation penalty of the input gradients.

  The penalty is taken on the views actually trained on (``images [B, V, H, W, C]``, one
  dual norm per example over all its views), through the same ``loss_fn`` (the augmented
  targets and the mixing plan included), over the global batch (``ctx.axis_name``).
  ``config.penalty_mode`` = ``exact`` (grad of grad, default), ``forward_over_reverse`` (the
  same gradient, cheaper) or ``finite_difference`` (see :func:`drojax.losses.wdro_loss`);
  ``config.penalty_subsample`` < 1 takes it on a random fraction (key: ``ctx.key``); ``q``,
  ``norm``, ``rho`` as in :func:`drojax.losses.wdro_loss`. BatchNorm in train mode couples
  examples, so the input gradient is that of the batch's summed loss (as in the reference).
  """
  if config.rho < 0:
    raise ValueError(f"rho must be >= 0, got {config.rho}")
  if config.penalty_mode not in _losses.PENALTY_MODES:
    raise ValueError(f"penalty_mode must be one of {_losses.PENALTY_MODES}, got "
                     f"{config.penalty_mode!r}")

  def objective(loss_fn, images, targets, ctx):
    total, aux = _losses.wdro_loss(
        loss_fn, images, targets, rho=config.rho, q=config.q, norm=config.norm, has_aux=True,
        axis_name=ctx.axis_name, mode=config.penalty_mode, subsample=config.penalty_subsample,
        key=ctx.key if config.penalty_subsample < 1.0 else None)
    return total, ObjectiveAux(aux.losses, aux.fn_aux, {"penalty": aux.penalty})

  return objective


def _global_weighted(losses: jax.Array, weights: jax.Array, axis_name: str | None) -> jax.Array:
  """``sum_i w_i l_i`` over the global batch for global ``weights`` and local ``losses``."""
  return jnp.sum(weights * _all_gather(losses, axis_name))


def var_dro_objective(config: MethodConfig) -> ObjectiveFn:
  r"""Var-DRO (2511.05568): :math:`\sum_i q_i \ell_i` with water-filling weights.

  The weights are solved over the GLOBAL batch: the losses and the tracked variances
  (``ctx.tracker.var[ids]``, from before this step's tracker update) are gathered over
  ``ctx.axis_name``; the radii follow ``eps_max_schedule(ctx.step)``. Weights are constants
  for differentiation. The result is the same on every device.
  """
  for name in ("var_dro_eps_min", "var_dro_eps_max"):
    if getattr(config, name) < 0:
      raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
  if config.var_dro_eps_max < config.var_dro_eps_min:
    raise ValueError(f"var_dro_eps_max ({config.var_dro_eps_max}) must be >= var_dro_eps_min "
                     f"({config.var_dro_eps_min})")

  def objective(loss_fn, images, targets, ctx):
    if ctx.tracker is None:
      raise ValueError("var_dro needs a variance tracker: create the train state with "
                       "num_examples (the dataset size) so TrainState.tracker is set")
    losses, model_aux = loss_fn(images, targets)
    all_losses = jax.lax.stop_gradient(_all_gather(losses, ctx.axis_name))
    all_var = _all_gather(ctx.tracker.var[ctx.ids], ctx.axis_name)
    weights = _weighting.var_dro_weights(
        all_losses, all_var, ctx.step, eps_min=config.var_dro_eps_min,
        eps_max=config.var_dro_eps_max, warmup_steps=config.var_dro_warmup_steps,
        ramp_steps=config.var_dro_ramp_steps)
    weights = jax.lax.stop_gradient(weights)
    value = _global_weighted(losses, weights, ctx.axis_name)
    n = weights.shape[0]
    metrics = {"weights_max_ratio": jnp.max(weights) * n,
               "weights_entropy": _entropy(weights),
               "weights_sum": jnp.sum(weights)}
    return value, ObjectiveAux(losses, model_aux, metrics)

  return objective


def kl_dro_objective(config: MethodConfig) -> ObjectiveFn:
  r"""KL-DRO: :math:`\tau \log \frac1N \sum_i e^{\ell_i/\tau}` over the global batch."""
  if config.kl_temperature <= 0:
    raise ValueError(f"kl_temperature must be > 0, got {config.kl_temperature}")

  def objective(loss_fn, images, targets, ctx):
    losses, model_aux = loss_fn(images, targets)
    all_losses = _all_gather(losses, ctx.axis_name)
    value = _losses.kl_dro_loss(all_losses, temperature=config.kl_temperature)
    w = jax.nn.softmax(jax.lax.stop_gradient(all_losses) / config.kl_temperature)
    metrics = {"weights_max_ratio": jnp.max(w) * w.shape[0], "weights_entropy": _entropy(w)}
    return value, ObjectiveAux(losses, model_aux, metrics)

  return objective


def cvar_objective(config: MethodConfig) -> ObjectiveFn:
  """CVaR: the mean of the top ``ceil(alpha * N)`` losses of the global batch."""
  if not 0.0 < config.cvar_alpha <= 1.0:
    raise ValueError(f"cvar_alpha must be in (0, 1], got {config.cvar_alpha}")

  def objective(loss_fn, images, targets, ctx):
    losses, model_aux = loss_fn(images, targets)
    value = _losses.cvar_loss(_all_gather(losses, ctx.axis_name), alpha=config.cvar_alpha)
    return value, ObjectiveAux(losses, model_aux, {})

  return objective


# ----------------------------------------------------------------------------------------------
# The table.


def _plain(config: MethodConfig) -> AugmentFn:
  return functools.partial(plain_views, label_smoothing=config.label_smoothing)


register("erm", lambda c: Method("erm", _plain(c), cross_entropy_criterion, mean_objective(),
                                 description="empirical risk minimization (mean cross-entropy)"))
register("dro", lambda c: Method("dro", _plain(c), cross_entropy_criterion, wdro_objective(c),
                                 description="W-DRO: mean loss + rho * variation penalty (exact)"))
register("var_dro", lambda c: Method(
    "var_dro", _plain(c), cross_entropy_criterion, var_dro_objective(c), uses_tracker=True,
    description="Var-DRO: variance-tracked radii, water-filling weights over the global batch",
    tracker_ema=c.var_dro_ema))
register("kl_dro", lambda c: Method("kl_dro", _plain(c), cross_entropy_criterion,
                                    kl_dro_objective(c), description="KL-DRO (log-sum-exp)"))
register("cvar", lambda c: Method("cvar", _plain(c), cross_entropy_criterion, cvar_objective(c),
                                  description="CVaR of the per-example losses"))
from drojax import augmented_methods  # noqa: E402,F401  (registers the augmentation methods)
