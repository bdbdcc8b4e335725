"""Registers the augmentation methods of DRO-Augment in the method table.

Importing this module (``drojax.methods`` does it at its end) adds, as
``name: views (augment) | per-example loss (criterion) | objective``:

* ``mixup``: 1 Mixup view | cross-entropy on the mixed targets | mean
* ``augmix``: 3 views (clean, AugMix, AugMix) | CE(clean) + 12 JSD(3 views) | mean
* ``noisymix``: AugMix's 3 views + a NoisyMix ``MixPlan`` (mixed targets) | as augmix | mean
* ``dro_mixup``, ``dro_augmix``, ``dro_noisymix``: as above | as above | mean + rho x W-DRO
  variation penalty (``drojax.methods.wdro_objective``)
* ``var_dro_mixup``, ``var_dro_augmix``: as mixup / augmix | as above | Var-DRO water-filling
  weights (``drojax.methods.var_dro_objective``; the methods keep a variance tracker)

What the W-DRO penalty is taken over (``dro_*``): the views actually trained on, i.e. the
``Views.images [B, V, H, W, C]`` this module returns (the mixed images for ``dro_mixup``; all
three views, clean and both AugMix views, for ``dro_augmix`` and ``dro_noisymix``), through the
full training loss of each example: the same ``criterion`` (cross-entropy on the clean view
plus ``jsd_weight`` x the JSD consistency for the JSD methods) against the same mixed targets,
with the NoisyMix plan applied inside the model. One dual norm per example covers all of its
views (``drojax.methods.wdro_objective``). The official DRO-Augment code instead took a
detached penalty on the clean view only (``shared/reference/recipes.md``).

Hyper-parameters come from ``drojax.methods.MethodConfig`` (``mixup_alpha``, ``augmix_*``,
``jsd_weight``, ``noisymix_*``, ``rho``/``q``/``norm``/``penalty_*``, ``var_dro_*``,
``label_smoothing``). Images are NHWC float32 in [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drojax import losses as _losses
from drojax import methods as _m
from drojax.augment.augmix import augmix_views
from drojax.augment.mixup import mixup
from drojax.augment.noisymix import sample_noisymix_plan

JSD_VIEWS = 3  # (clean, augmix, augmix) as in AugMix's JSD training


# ------------------------------------------------------------------------------ augmentations

def mixup_augment(config: _m.MethodConfig) -> _m.AugmentFn:
  """Mixup views: one view of mixed images, targets mixed with the same ``lam`` and partner.

  ``lam ~ Beta(mixup_alpha, mixup_alpha)`` once per batch, as facebookresearch/mixup-cifar10.
  """

  def augment(key: jax.Array, batch: _m.Batch, num_classes: int) -> _m.Views:
    targets = _m.smooth_targets(batch.labels, num_classes, config.label_smoothing)
    images, targets = mixup(key, batch.images, targets, alpha=config.mixup_alpha)
    return _m.Views(images=images[:, None], targets=targets, mix=None)

  return augment


def _augmix_kwargs(config: _m.MethodConfig) -> dict:
  return dict(width=config.augmix_width, depth=config.augmix_depth,
              severity=float(config.augmix_severity), alpha=config.augmix_alpha,
              all_ops=config.augmix_all_ops)


def augmix_augment(config: _m.MethodConfig) -> _m.AugmentFn:
  """AugMix/JSD views ``[B, 3, H, W, C]`` = (clean, AugMix, AugMix), per-example draws."""
  kwargs = _augmix_kwargs(config)

  def augment(key: jax.Array, batch: _m.Batch, num_classes: int) -> _m.Views:
    views = augmix_views(key, batch.images, **kwargs)
    targets = _m.smooth_targets(batch.labels, num_classes, config.label_smoothing)
    return _m.Views(images=views, targets=targets, mix=None)

  return augment


def noisymix_augment(config: _m.MethodConfig) -> _m.AugmentFn:
  """NoisyMix: AugMix/JSD views plus a hidden-layer ``MixPlan`` and mixed targets.

  The plan mixes view ``v`` of example ``i`` with view ``v`` of a partner at a random layer
  and adds sparse noise with additive levels x1, x2, x3 over the three views.
  """
  kwargs = _augmix_kwargs(config)

  def augment(key: jax.Array, batch: _m.Batch, num_classes: int) -> _m.Views:
    k_views, k_plan = jax.random.split(key)
    views = augmix_views(k_views, batch.images, **kwargs)
    targets = _m.smooth_targets(batch.labels, num_classes, config.label_smoothing)
    plan, targets = sample_noisymix_plan(
        k_plan, targets, num_views=JSD_VIEWS, alpha=config.mixup_alpha,
        manifold=config.noisymix_manifold, add_level=config.noisymix_add_noise,
        mult_level=config.noisymix_mult_noise, sparsity=config.noisymix_sparsity)
    return _m.Views(images=views, targets=targets, mix=plan)

  return augment


# ------------------------------------------------------------------------------ criterion

def jsd_criterion(jsd_weight: float) -> _m.CriterionFn:
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


# ------------------------------------------------------------------------------ the table

def _method(name, augment, criterion, objective, config, description, tracker=False):
  return _m.Method(name, augment, criterion, objective, uses_tracker=tracker,
                   description=description, tracker_ema=config.var_dro_ema)


def _register_all() -> None:
  ce = _m.cross_entropy_criterion
  entries = {
      "mixup": lambda c: _method("mixup", mixup_augment(c), ce, _m.mean_objective(), c,
                                 "Mixup (mean cross-entropy on mixed targets)"),
      "augmix": lambda c: _method("augmix", augmix_augment(c), jsd_criterion(c.jsd_weight),
                                  _m.mean_objective(), c, "AugMix with the JSD consistency loss"),
      "noisymix": lambda c: _method("noisymix", noisymix_augment(c), jsd_criterion(c.jsd_weight),
                                    _m.mean_objective(), c,
                                    "NoisyMix: AugMix/JSD views, manifold mixup and sparse noise"),
      "dro_mixup": lambda c: _method("dro_mixup", mixup_augment(c), ce, _m.wdro_objective(c), c,
                                     "Mixup + W-DRO penalty on the mixed images"),
      "dro_augmix": lambda c: _method("dro_augmix", augmix_augment(c),
                                      jsd_criterion(c.jsd_weight), _m.wdro_objective(c), c,
                                      "AugMix/JSD + W-DRO penalty on all three views"),
      "dro_noisymix": lambda c: _method("dro_noisymix", noisymix_augment(c),
                                        jsd_criterion(c.jsd_weight), _m.wdro_objective(c), c,
                                        "NoisyMix + W-DRO penalty on all three views"),
      "var_dro_mixup": lambda c: _method("var_dro_mixup", mixup_augment(c), ce,
                                         _m.var_dro_objective(c), c,
                                         "Mixup + Var-DRO example weights", tracker=True),
      "var_dro_augmix": lambda c: _method("var_dro_augmix", augmix_augment(c),
                                          jsd_criterion(c.jsd_weight), _m.var_dro_objective(c), c,
                                          "AugMix/JSD + Var-DRO example weights", tracker=True),
  }
  for name, factory in entries.items():
    # Idempotent under importlib.reload: re-registering replaces our own entries.
    _m.register(name, factory, overwrite=True)


_register_all()
