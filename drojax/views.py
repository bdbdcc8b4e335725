"""What a method trains on: the batch, its views, the augmentations and the per-example criteria.

An augmentation is ``augment(key, batch, num_classes) -> Views``: the views trained on (1 for
plain/Mixup, 3 for AugMix/JSD), their soft targets, and an optional hidden-layer ``MixPlan``.
A criterion is ``criterion(logits, targets) -> [B]``: the per-example training loss of example
``i`` given the logits of all its views (cross-entropy, or cross-entropy + JSD consistency).
Factories here take a config object with the fields they read (``drojax.methods.MethodConfig``:
``label_smoothing``, ``mixup_alpha``, ``augmix_*``, ``jsd_weight``, ``noisymix_*``); they do not
import it, so this module sits below the method table.

Shapes (per device, B examples, V views, K classes); images are float32 NHWC in [0, 1]:
  ``Views.images``   ``[B, V, H, W, C]`` example-major, so a per-example input-gradient norm
                     covers all of an example's views together.
  model input        ``[V * B, H, W, C]`` view-major (:func:`views_to_model_batch`): rows
                     ``v*B .. v*B + B - 1`` are view ``v``; ``MixPlan`` arrays are ``[V * B]``
                     in this order.
  ``Views.targets``  ``[B, K]`` float32 soft targets (one-hot, smoothed or mixed).
  logits             ``[V * B, K]`` in the model-input order.

What the W-DRO penalty is taken over (``dro_*`` methods): the views returned here (the mixed
images for Mixup; all three views, clean and both AugMix views, for AugMix and NoisyMix),
through the full training loss of each example, the NoisyMix plan applied inside the model.
The official DRO-Augment code instead took a detached penalty on the clean view only
(``shared/reference/recipes.md``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from drojax import losses as _losses
from drojax.augment.augmix import augmix_views
from drojax.augment.mixing import MixPlan
from drojax.augment.mixup import mixup
from drojax.augment.noisymix import sample_noisymix_plan

JSD_VIEWS = 3  # (clean, augmix, augmix) as in AugMix's JSD training


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


AugmentFn = Callable[[jax.Array, "Batch", int], "Views"]
CriterionFn = Callable[[jax.Array, jax.Array], jax.Array]


def smooth_targets(labels: jax.Array, num_classes: int, *,
                   label_smoothing: float = 0.0) -> jax.Array:
  r"""One-hot targets ``[B, K]`` with label smoothing: :math:`(1 - s)\,e_y + s / K`.

  Example:
    >>> smooth_targets(jnp.array([1]), 4, label_smoothing=0.2).tolist()
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
      batch.labels, num_classes, label_smoothing=label_smoothing), mix=None)


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


def plain_augment(config: Any) -> AugmentFn:
  """The identity augmentation with ``config.label_smoothing``: :func:`plain_views`."""
  return functools.partial(plain_views, label_smoothing=config.label_smoothing)


def mixup_augment(config: Any) -> AugmentFn:
  """Mixup views: one view of mixed images, targets mixed with the same ``lam`` and partner.

  ``lam ~ Beta(mixup_alpha, mixup_alpha)`` once per batch, as facebookresearch/mixup-cifar10.
  """

  def augment(key: jax.Array, batch: Batch, num_classes: int) -> Views:
    targets = smooth_targets(batch.labels, num_classes, label_smoothing=config.label_smoothing)
    images, targets = mixup(key, batch.images, targets, alpha=config.mixup_alpha)
    return Views(images=images[:, None], targets=targets, mix=None)

  return augment


def _augmix_kwargs(config: Any) -> dict:
  return dict(width=config.augmix_width, depth=config.augmix_depth,
              severity=float(config.augmix_severity), alpha=config.augmix_alpha,
              all_ops=config.augmix_all_ops)


def augmix_augment(config: Any) -> AugmentFn:
  """AugMix/JSD views ``[B, 3, H, W, C]`` = (clean, AugMix, AugMix), per-example draws."""
  kwargs = _augmix_kwargs(config)

  def augment(key: jax.Array, batch: Batch, num_classes: int) -> Views:
    views = augmix_views(key, batch.images, **kwargs)
    targets = smooth_targets(batch.labels, num_classes, label_smoothing=config.label_smoothing)
    return Views(images=views, targets=targets, mix=None)

  return augment


def noisymix_augment(config: Any) -> AugmentFn:
  """NoisyMix: AugMix/JSD views plus a hidden-layer ``MixPlan`` and mixed targets.

  The plan mixes view ``v`` of example ``i`` with view ``v`` of a partner at a random layer
  and adds sparse noise with additive levels x1, x2, x3 over the three views.
  """
  kwargs = _augmix_kwargs(config)

  def augment(key: jax.Array, batch: Batch, num_classes: int) -> Views:
    k_views, k_plan = jax.random.split(key)
    views = augmix_views(k_views, batch.images, **kwargs)
    targets = smooth_targets(batch.labels, num_classes, label_smoothing=config.label_smoothing)
    plan, targets = sample_noisymix_plan(
        k_plan, targets, num_views=JSD_VIEWS, alpha=config.mixup_alpha,
        manifold=config.noisymix_manifold, add_level=config.noisymix_add_noise,
        mult_level=config.noisymix_mult_noise, sparsity=config.noisymix_sparsity)
    return Views(images=views, targets=targets, mix=plan)

  return augment


def jsd_criterion(jsd_weight: float) -> CriterionFn:
  r"""AugMix's per-example loss: :math:`CE(z_{0,i}, t_i) + w \, JS(z_{0,i}, \dots, z_{V-1,i})`.

  Args:
    jsd_weight: ``w`` (12 in AugMix), >= 0.

  Returns:
    ``criterion(logits [V * B, K], targets [B, K]) -> [B]`` with view 0 the clean view. The
    batch mean of it equals AugMix's training loss.
  """
  if jsd_weight < 0:
    raise ValueError(f"jsd_weight must be >= 0; received {jsd_weight!r}.")

  def criterion(logits: jax.Array, targets: jax.Array) -> jax.Array:
    b, k = targets.shape
    if logits.ndim != 2 or logits.shape[1] != k or logits.shape[0] % b or logits.shape[0] < 2 * b:
      raise ValueError(f"logits must be [V * B, K] with V >= 2, B = {b}, K = {k}; received "
                       f"{tuple(logits.shape)}.")
    views = logits.reshape(logits.shape[0] // b, b, k)
    return _losses.cross_entropy(views[0], targets) + jsd_weight * _losses.jsd_consistency(views)

  return criterion
