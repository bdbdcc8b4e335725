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

Methods are looked up with ``get_method(name, config)``; unknown names raise a ``ValueError``
listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax

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
ObjectiveFn = Callable[[LossFn, jax.Array, jax.Array, ObjectiveContext], tuple[jax.Array, ObjectiveAux]]


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: augmentation, per-example criterion, and robust objective."""

  name: str
  augment: AugmentFn
  criterion: CriterionFn
  objective: ObjectiveFn
  uses_tracker: bool = False  # True when the objective reads/updates the Var-DRO tracker
  description: str = ""


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
  penalty_mode: str = "exact"  # "exact" | "finite_difference"
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
  kl_temperature: float = 1.0
  cvar_alpha: float = 0.5
  # Var-DRO
  var_dro_ema: float = 0.1
  var_dro_eps_min: float = 0.0
  var_dro_eps_max: float = 1.0
  var_dro_warmup_steps: int = 0
  var_dro_ramp_steps: int = 0
