"""Per-example losses: ``[B]`` in, ``[B]`` out; reducing them is the objective's job.

* :func:`cross_entropy` (label smoothing; integer or probability labels),
* :func:`jsd_consistency` (AugMix's Jensen-Shannon consistency over views),
* :func:`trades_kl` (TRADES' robustness term, Zhang et al. 2019),
* :func:`mart_loss` (MART's per-example loss, Wang et al. 2020).

The W-DRO variation penalty is in :mod:`drojax.wdro`, the objectives that reduce per-example
losses (mean, W-DRO, Var-DRO, KL-DRO, CVaR, adversarial training) in :mod:`drojax.objectives`.
The names this module exported before (``wdro_loss``, ``variation_penalty``,
``input_gradients``, ``kl_dro_loss``, ``cvar_loss``, ``WDROAux``, ``PENALTY_MODES``,
``DEFAULT_FD_STEP``) still import from here for one release, with a ``DeprecationWarning``.

Logits are ``[B, K]`` float. This module imports JAX only (no Flax, Optax, Orbax or TFDS).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from drojax._checks import check_float as _check_float
from drojax._checks import (check_distribution, check_hyper, check_labels, check_scalar_range,
                            distribution_tolerance)

__all__ = ["cross_entropy", "jsd_consistency", "mart_loss", "trades_kl"]

# AugMix clamps the mixture probabilities at this value before taking its log.
_JSD_CLAMP = 1e-7
# MART's official code (YisenWang/MART, mart_loss): log(1.0001 - p + 1e-12) in the boosted CE,
# log(p_adv + 1e-12) in the KL, and (1.0000001 - p_clean[y]) as the KL's weight.
_MART_BCE_ONE = 1.0001
_MART_LOG_EPS = 1e-12
_MART_WEIGHT_ONE = 1.0000001


def cross_entropy(logits: jax.Array, labels: jax.Array, *,
                  label_smoothing: float = 0.0) -> jax.Array:
  r"""Per-example softmax cross-entropy with optional label smoothing.

  .. math::

    \ell_i = -\sum_k t_{ik} \log \mathrm{softmax}(z_i)_k, \qquad
    t_i = (1 - s)\, y_i + s / K,

  where :math:`y_i` is the one-hot label (integer ``labels``) or the given probability row.

  Args:
    logits: ``[B, K]`` float.
    labels: ``[B]`` integer class ids in ``[0, K)``, or ``[B, K]`` float probabilities (rows
      >= 0 summing to 1). An id outside ``[0, K)`` or a row that is no distribution is a
      ``ValueError`` when the labels are concrete; under ``jit`` (where they cannot be
      checked) that row's loss is NaN, never a finite wrong value.
    label_smoothing: ``s`` in ``[0, 1]``.

  Returns:
    ``[B]`` losses in the dtype of ``logits``.

  Example:
    >>> import jax.numpy as jnp
    >>> l = cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
    >>> [round(float(v), 4) for v in l]  # log 4
    [1.3863, 1.3863]
  """
  logits = _check_float("logits", logits, rank=2)
  labels = jnp.asarray(labels)
  b, k = logits.shape
  check_scalar_range("label_smoothing", label_smoothing, low=0.0, high=1.0,
                      expected="in [0, 1]")
  if jnp.issubdtype(labels.dtype, jnp.integer):
    if labels.shape != (b,):
      raise ValueError(f"labels must have shape [B]=({b},) (integer ids) or [B, K]={logits.shape}"
                       f" (probabilities), got shape {labels.shape}.")
    check_labels("labels", labels, k)
    targets = jax.nn.one_hot(labels, k, dtype=logits.dtype)
    valid = (labels >= 0) & (labels < k)
  elif jnp.issubdtype(labels.dtype, jnp.floating):
    if labels.shape != logits.shape:
      raise ValueError(f"probability labels must have the shape of logits {logits.shape}, got "
                       f"{labels.shape}.")
    check_distribution("labels", labels)
    # Traced rows cannot be checked: a row that is no distribution gives NaN.
    valid = jnp.all(labels >= 0, axis=-1) & (
        jnp.abs(jnp.sum(labels, axis=-1) - 1) <= distribution_tolerance(labels.dtype))
    targets = labels.astype(logits.dtype)
  else:
    raise TypeError(f"labels must be integer ids or float probabilities, got dtype "
                    f"{labels.dtype}.")
  targets = (1.0 - label_smoothing) * targets + label_smoothing / k
  losses = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return jnp.where(valid, losses, jnp.nan)


def jsd_consistency(logits_views: jax.Array | Sequence[jax.Array]) -> jax.Array:
  r"""AugMix's Jensen-Shannon consistency over ``V >= 2`` views, per example.

  .. math::

    \mathrm{JS}_i = \frac1V \sum_v \mathrm{KL}(p_{v,i} \,\|\, M_i), \qquad
    M_i = \max\Big(\frac1V \sum_v p_{v,i},\ 10^{-7}\Big),

  with :math:`p_{v,i} = \mathrm{softmax}(z_{v,i})` and the clamp as in AugMix. AugMix multiplies
  the batch mean of this by 12; that weight is the caller's job.

  Args:
    logits_views: ``[V, B, K]`` float logits, or a sequence of ``V`` arrays ``[B, K]``.

  Returns:
    ``[B]`` non-negative divergences (0 when all views agree).

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 2.0], [1.0, 2.0]])
    >>> [round(float(v), 6) for v in jsd_consistency([z, z])]
    [0.0, 0.0]
  """
  if isinstance(logits_views, (list, tuple)):
    if len(logits_views) < 2:
      raise ValueError(f"logits_views must hold V >= 2 views, got {len(logits_views)}.")
    shapes = {jnp.shape(z) for z in logits_views}
    if len(shapes) != 1:
      raise ValueError(f"every view in logits_views must have the same [B, K] shape, got "
                       f"{sorted(shapes)}.")
    logits_views = jnp.stack([jnp.asarray(z) for z in logits_views])
  z = _check_float("logits_views", logits_views, rank=3)
  if z.shape[0] < 2:
    raise ValueError(f"logits_views must hold V >= 2 views on axis 0, got shape {z.shape}.")
  log_p = jax.nn.log_softmax(z, axis=-1)  # [V, B, K]
  p = jnp.exp(log_p)
  log_m = jnp.log(jnp.clip(jnp.mean(p, axis=0), _JSD_CLAMP, 1.0))  # [B, K]
  kl = jnp.sum(p * (log_p - log_m[None]), axis=-1)  # [V, B]
  return jnp.mean(kl, axis=0)


def _check_pair(logits_clean: Any, logits_adv: Any) -> tuple[jax.Array, jax.Array]:
  logits_clean = _check_float("logits_clean", logits_clean, rank=2)
  logits_adv = _check_float("logits_adv", logits_adv, rank=2)
  if logits_clean.shape != logits_adv.shape:
    raise ValueError(f"logits_clean {logits_clean.shape} and logits_adv {logits_adv.shape} must "
                     f"have the same [B, K] shape.")
  return logits_clean, logits_adv


def trades_kl(logits_clean: jax.Array, logits_adv: jax.Array) -> jax.Array:
  r"""TRADES' robustness term per example: :math:`\mathrm{KL}(p_{clean,i} \,\|\, p_{adv,i})`.

  .. math::

    \mathrm{KL}_i = \sum_k p_{ik} (\log p_{ik} - \log q_{ik}), \quad
    p_i = \mathrm{softmax}(z^{clean}_i),\ q_i = \mathrm{softmax}(z^{adv}_i),

  as ``nn.KLDivLoss(log_softmax(adv), softmax(clean))`` in the TRADES code (Zhang et al. 2019,
  arXiv 1901.08573), per example instead of summed. TRADES trains on
  ``mean(CE(clean)) + beta * mean(trades_kl)``. Both arguments carry gradient.

  Args:
    logits_clean: ``[B, K]`` float logits of the clean images.
    logits_adv: ``[B, K]`` float logits of the adversarial images.

  Returns:
    ``[B]`` non-negative divergences (0 where the two predictions agree).

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 2.0, 0.5]])
    >>> [round(float(v), 6) for v in trades_kl(z, z)]
    [0.0]
  """
  logits_clean, logits_adv = _check_pair(logits_clean, logits_adv)
  log_p = jax.nn.log_softmax(logits_clean, axis=-1)
  log_q = jax.nn.log_softmax(logits_adv, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def mart_loss(logits_clean: jax.Array, logits_adv: jax.Array, labels: jax.Array, *,
              beta: float | jax.Array) -> jax.Array:
  r"""MART's per-example loss (Wang et al. 2020, ICLR, "misclassification aware").

  .. math::

    \mathrm{BCE}_i = -\log q_{i,y_i} - \log(1 - q_{i,y'_i}), \quad
    y'_i = \arg\max_{k \ne y_i} q_{ik}, \\
    \ell_i = \mathrm{BCE}_i + \beta\, \mathrm{KL}(p_i \,\|\, q_i)\, (1 - p_{i,y_i}),

  with :math:`p_i = \mathrm{softmax}(z^{clean}_i)`, :math:`q_i = \mathrm{softmax}(z^{adv}_i)`,
  and, as in the official code (YisenWang/MART), :math:`\log(1.0001 - q + 10^{-12})` in the
  boosted CE, :math:`\log(q + 10^{-12})` in the KL and the weight :math:`1.0000001 - p_{i,y_i}`.
  MART trains on the batch mean. Both logits carry gradient (the weight too).

  Args:
    logits_clean: ``[B, K]`` float logits of the clean images.
    logits_adv: ``[B, K]`` float logits of the adversarial images, ``K >= 2``.
    labels: ``[B]`` integer class ids in ``[0, K)``.
    beta: weight of the KL term, ``>= 0``.

  Returns:
    ``[B]`` losses.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[2.0, 0.0]])
    >>> round(float(mart_loss(z, z, jnp.array([0]), beta=6.0)[0]), 4)  # KL = 0: the boosted CE
    0.2537
  """
  logits_clean, logits_adv = _check_pair(logits_clean, logits_adv)
  b, k = logits_adv.shape
  if k < 2:
    raise ValueError(f"mart_loss needs K >= 2 classes, got logits of shape {logits_adv.shape}.")
  check_hyper("beta", beta, low=0.0, expected=">= 0 and finite")
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != (b,):
    raise ValueError(f"labels must be [B]=({b},) integer class ids, got {labels.dtype} "
                     f"{labels.shape}.")
  ce = cross_entropy(logits_adv, labels)
  q = jax.nn.softmax(logits_adv, axis=-1)
  onehot = jax.nn.one_hot(labels, k, dtype=q.dtype)
  # The most likely wrong class: the best class once the true one is masked out.
  wrong = jnp.argmax(jnp.where(onehot > 0, -jnp.inf, q), axis=-1)
  q_wrong = jnp.take_along_axis(q, wrong[:, None], axis=-1)[:, 0]
  bce = ce - jnp.log(_MART_BCE_ONE - q_wrong + _MART_LOG_EPS)
  p = jax.nn.softmax(logits_clean, axis=-1)
  log_p = jax.nn.log_softmax(logits_clean, axis=-1)
  kl = jnp.sum(p * (log_p - jnp.log(q + _MART_LOG_EPS)), axis=-1)
  p_true = jnp.sum(p * onehot, axis=-1)
  return bce + beta * kl * (_MART_WEIGHT_ONE - p_true)


# Old public names: (module, name, what to use now). Kept for one release.
_DEPRECATED = {
    "wdro_loss": ("drojax.losses", "_wdro_loss", "drojax.wdro.wdro_total (key first; "
                  "penalty_mode, penalty_subsample; q defaults to 1)"),
    "variation_penalty": ("drojax.losses", "_variation_penalty",
                          "drojax.wdro.variation_penalty (q defaults to 1)"),
    "input_gradients": ("drojax.wdro", "input_gradients", "drojax.wdro.input_gradients"),
    "WDROAux": ("drojax.wdro", "WDROAux", "drojax.wdro.WDROAux"),
    "PENALTY_MODES": ("drojax.wdro", "PENALTY_MODES", "drojax.wdro.PENALTY_MODES"),
    "DEFAULT_FD_STEP": ("drojax.wdro", "DEFAULT_FD_STEP", "drojax.wdro.DEFAULT_FD_STEP"),
    "kl_dro_loss": ("drojax.objectives", "kl_dro_risk", "drojax.objectives.kl_dro_risk"),
    "cvar_loss": ("drojax.objectives", "cvar_risk", "drojax.objectives.cvar_risk"),
}


def _wdro_loss(loss_fn, x, *args, rho, q=2.0, norm="l2", has_aux=False, axis_name=None,
               mode="exact", fd_step=None, subsample=1.0, key=None):
  """The old ``wdro_loss`` signature and defaults (q 2, exact), mapped onto ``wdro_total``."""
  from drojax import wdro
  return wdro.wdro_total(key, loss_fn, x, *args, rho=rho, q=q, norm=norm, has_aux=has_aux,
                         axis_name=axis_name, penalty_mode=mode,
                         fd_step=wdro.DEFAULT_FD_STEP if fd_step is None else fd_step,
                         penalty_subsample=subsample)


def _variation_penalty(grads, *, q=2.0, norm="l2", axis_name=None):
  """The old ``variation_penalty`` default (q 2)."""
  from drojax import wdro
  return wdro.variation_penalty(grads, q=q, norm=norm, axis_name=axis_name)


def __getattr__(name: str) -> Any:
  if name in _DEPRECATED:
    module, attr, instead = _DEPRECATED[name]
    warnings.warn(f"drojax.losses.{name} is deprecated; use {instead}", DeprecationWarning,
                  stacklevel=2)
    if module == __name__:
      return globals()[attr]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The group-shift statistics live in drojax.groups; these are their names in this module.
from drojax.groups import group_losses, irm_penalty, vrex_penalty  # noqa: E402

__all__ += ["group_losses", "irm_penalty", "vrex_penalty"]
