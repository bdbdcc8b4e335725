r"""Group and environment statistics for group-shift training: group losses, the group-DRO
weight update, the V-REx and IRMv1 penalties.

* :func:`group_losses`: the mean loss of each group (0 for a group with no example), over the
  global batch when an ``axis_name`` is given;
* :func:`group_dro_update`: Sagawa et al. (ICLR 2020), Algorithm 1's exponentiated-gradient step
  on the group weights, with the optional group adjustment :math:`C/\sqrt{n_g}`
  (:func:`group_adjustments`);
* :func:`vrex_penalty`: Krueger et al. (ICML 2021), the variance of the environment risks;
* :func:`irm_penalty`, :func:`irm_gradients`: Arjovsky et al. (2019), IRMv1, the squared
  gradient of the risk with respect to a scalar dummy classifier ``w`` at 1.0;
* :func:`annealed_penalty`: both papers' schedule of the penalty weight;
* on the host (NumPy): :func:`check_training_data` (the ids a group or environment method
  trains on, checked against its configured counts), :func:`jtt_weights` (JTT's second-stage
  weights), :func:`select` (model selection by worst-group or average validation accuracy, the
  score :func:`selection_score`) and
  :func:`summarize_by_group` (Var-DRO's tracked variances and weights by group and label).

Re-exported as ``drojax.losses.group_losses / vrex_penalty / irm_penalty`` and
``drojax.weighting.group_dro_update``. Pure functions of arrays; imports JAX only. Logits are
``[B, K]`` float.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_float as _check_float
from drojax._checks import (check_distribution, check_hyper, check_int_range,
                            check_scalar_range, check_static_int, distribution_tolerance)
from drojax._checks import is_concrete as _is_concrete

__all__ = ["NEEDS", "SELECTIONS", "annealed_penalty", "check_training_data", "group_adjustments",
           "group_counts", "group_dro_update", "group_losses", "irm_gradients", "irm_penalty",
           "jtt_weights", "select", "selection_score", "summarize_by_group", "training_ids",
           "vrex_penalty"]


def _check_ids(name: str, ids: Any, b: int, num_groups: int) -> jax.Array:
  check_static_int("num_groups", num_groups, minimum=1)
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer) or ids.shape != (b,):
    raise ValueError(f"{name} must be integer ids of shape [B]=({b},), got {ids.dtype} "
                     f"{ids.shape}")
  if _is_concrete(ids):
    host = np.asarray(ids)
    bad = host[(host < 0) | (host >= num_groups)]
    if bad.size:
      raise ValueError(f"{name} must lie in [0, {num_groups}) for num_groups={num_groups}, got "
                       f"{bad[:5].tolist()}")
  return ids


def group_counts(groups: jax.Array, num_groups: int, *, axis_name: str | None = None,
                 dtype=jnp.float32) -> jax.Array:
  """``[G]``: how many examples of each group (summed over ``axis_name``'s devices).

  >>> group_counts(jnp.array([0, 2, 2]), 4).tolist()
  [1.0, 0.0, 2.0, 0.0]
  """
  groups = _check_ids("groups", groups, jnp.shape(groups)[0], num_groups)
  counts = jax.ops.segment_sum(jnp.ones(groups.shape, dtype), groups, num_groups)
  return counts if axis_name is None else jax.lax.psum(counts, axis_name)


def group_losses(per_example: jax.Array, groups: jax.Array, num_groups: int, *,
                 axis_name: str | None = None) -> jax.Array:
  r"""The mean loss of each group: :math:`\bar\ell_g = \frac{1}{n_g}\sum_{i: g_i = g} \ell_i`.

  A group without an example gets 0 (Sagawa et al.'s convention: it then contributes nothing
  to the robust loss, and its weight shrinks relative to the others in the next update).

  Args:
    per_example: ``[B]`` float losses.
    groups: ``[B]`` integer group ids in ``[0, num_groups)`` (checked when concrete).
    num_groups: ``G``, a static Python int.
    axis_name: a mesh axis the batch is split over: sums and counts are taken over the global
      batch (every device gets the same ``[G]``), differentiably.

  Returns:
    ``[G]`` in the dtype of ``per_example``.

  Example:
    >>> group_losses(jnp.array([1.0, 2.0, 4.0]), jnp.array([0, 2, 2]), 3).tolist()
    [1.0, 0.0, 3.0]
  """
  per_example = _check_float("per_example", per_example, rank=1)
  groups = _check_ids("groups", groups, per_example.shape[0], num_groups)
  sums = jax.ops.segment_sum(per_example, groups, num_groups)
  counts = jax.ops.segment_sum(jnp.ones_like(per_example), groups, num_groups)
  if axis_name is not None:
    sums, counts = jax.lax.psum((sums, counts), axis_name)
  return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)


def group_adjustments(train_counts: Any, *, adjustment: float) -> np.ndarray:
  r"""Sagawa et al.'s group adjustment :math:`C / \sqrt{n_g}` from training group sizes (host).

  Args:
    train_counts: ``[G]`` number of training examples of each group (all positive).
    adjustment: ``C >= 0``.

  Returns:
    ``[G]`` float32 NumPy array, added to the group losses in :func:`group_dro_update`.

  >>> group_adjustments([4, 100], adjustment=2.0).tolist()
  [1.0, 0.20000000298023224]
  """
  counts = np.asarray(train_counts, np.float64)
  if counts.ndim != 1 or not counts.size:
    raise ValueError(f"train_counts must be [G] counts, got shape {counts.shape}")
  if np.any(counts <= 0):
    raise ValueError(f"every group needs a training example for the group adjustment, got "
                     f"counts {counts.astype(int).tolist()}")
  check_scalar_range("adjustment", adjustment, low=0.0, expected=">= 0")
  return (adjustment / np.sqrt(counts)).astype(np.float32)


def group_dro_update(q: jax.Array, group_losses: jax.Array, *, step_size: float | jax.Array,
                     adjustments: jax.Array | None = None) -> jax.Array:
  r"""One exponentiated-gradient step on the group weights (Sagawa et al. 2020, Algorithm 1).

  .. math::

    q'_g \propto q_g \exp\big(\eta\,(\bar\ell_g + a_g)\big), \qquad \sum_g q'_g = 1,

  computed as a softmax of :math:`\log q + \eta(\bar\ell + a)` (no overflow for large
  :math:`\eta\bar\ell`). The weights are constants for the model's gradient: the robust
  objective is :math:`\sum_g q'_g \bar\ell_g`.

  Args:
    q: ``[G]`` current weights, non-negative, summing to 1 (a concrete ``q`` that is not is
      refused; a traced one gives NaN weights).
    group_losses: ``[G]`` float mean loss per group (:func:`group_losses`).
    step_size: :math:`\eta > 0`.
    adjustments: optional ``[G]`` :math:`a_g = C/\sqrt{n_g}` (:func:`group_adjustments`).

  Returns:
    ``[G]`` new weights.

  Example:
    >>> q = group_dro_update(jnp.array([0.5, 0.5]), jnp.array([0.0, jnp.log(3.0)]),
    ...                      step_size=1.0)
    >>> [round(float(v), 4) for v in q]
    [0.25, 0.75]
  """
  q = _check_float("q", q, rank=1)
  check_distribution("q", q)
  losses = _check_float("group_losses", group_losses, rank=1)
  if losses.shape != q.shape:
    raise ValueError(f"group_losses must have the shape of q {q.shape}, got {losses.shape}")
  check_scalar_range("step_size", step_size, low=0.0, low_open=True, expected="> 0")
  if adjustments is not None:
    adjustments = _check_float("adjustments", adjustments, rank=1)
    if adjustments.shape != q.shape:
      raise ValueError(f"adjustments must have the shape of q {q.shape}, got "
                       f"{adjustments.shape}")
    losses = losses + adjustments.astype(losses.dtype)
  logits = jnp.log(q) + jnp.asarray(step_size, losses.dtype) * losses
  valid = jnp.all(q >= 0) & (jnp.abs(jnp.sum(q) - 1) <= distribution_tolerance(q.dtype))
  return jnp.where(valid, jax.nn.softmax(logits), jnp.nan)


def vrex_penalty(risks: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
  r"""V-REx's penalty: the population variance of the environment risks (Krueger et al. 2021).

  .. math:: \frac1E \sum_e (R_e - \bar R)^2, \qquad \bar R = \frac1E \sum_e R_e.

  Args:
    risks: ``[E]`` float risks, one per environment.
    mask: optional ``[E]`` bool: only the environments where it is True count (``E`` becomes
      their number; environments absent from a batch are left out this way). With fewer than
      one environment counted the penalty is 0.

  Returns:
    ``[]`` scalar.

  >>> float(vrex_penalty(jnp.array([1.0, 3.0])))
  1.0
  """
  risks = _check_float("risks", risks, rank=1)
  if mask is None:
    return jnp.mean(jnp.square(risks - jnp.mean(risks)))
  mask = jnp.asarray(mask)
  if mask.shape != risks.shape or mask.dtype != jnp.bool_:
    raise ValueError(f"mask must be bool of the shape of risks {risks.shape}, got {mask.dtype} "
                     f"{mask.shape}")
  m = mask.astype(risks.dtype)
  n = jnp.maximum(jnp.sum(m), 1.0)
  mean = jnp.sum(m * risks) / n
  return jnp.sum(m * jnp.square(risks - mean)) / n


def annealed_penalty(risk: jax.Array, penalty: jax.Array, step: jax.Array | int, *,
                     weight: float, anneal_steps: int) -> jax.Array:
  r"""A risk plus an annealed penalty, as both papers' Colored MNIST code (IRMv1, V-REx) has it.

  .. math:: \frac{R + \lambda_t P}{\max(\lambda_t, 1)}, \qquad \lambda_t = 1 \text{ before
            step } t = \text{anneal\_steps}, \quad \lambda \text{ from it on}

  (divided by the weight once it is above 1, so the step size does not jump with it).

  Args:
    risk: ``[]`` float, the risk term.
    penalty: ``[]`` float, the penalty.
    step: optimizer step (int or traced ``[]`` integer).
    weight: :math:`\lambda \ge 0`.
    anneal_steps: the steps at weight 1 (a Python int ``>= 0``).

  Returns:
    ``[]`` float32.

  >>> float(annealed_penalty(1.0, 0.5, 3, weight=4.0, anneal_steps=2))  # (1 + 4 * 0.5) / 4
  0.75
  """
  check_static_int("anneal_steps", anneal_steps, minimum=0)
  check_hyper("weight", weight, low=0.0, expected=">= 0 and finite")
  lam = jnp.where(step >= anneal_steps, jnp.float32(weight), jnp.float32(1.0))
  return (risk + lam * penalty) / jnp.maximum(lam, 1.0)


def irm_gradients(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Per example, :math:`\partial_w\, \mathrm{CE}(w z_i, t_i)` at :math:`w = 1`.

  The mean of these over an environment is the gradient of its risk with respect to IRMv1's
  dummy classifier; they are differentiable with respect to the logits (the IRM objective
  differentiates their square). In closed form, :math:`p_i^\top z_i - t_i^\top z_i` with
  :math:`p_i = \mathrm{softmax}(z_i)` and :math:`t_i` the one-hot label or the probability row
  (``jax.grad`` with respect to a scalar ``w`` would, inside ``shard_map``, sum ``w``'s
  cotangent over the devices, since ``w`` is the same on all of them).

  Args:
    logits: ``[B, K]`` float.
    labels: ``[B]`` integer class ids or ``[B, K]`` float probabilities (rows summing to 1).

  Returns:
    ``[B]`` in the dtype of ``logits``.
  """
  from drojax.losses import cross_entropy

  logits = _check_float("logits", logits, rank=2)
  labels = jnp.asarray(labels)
  cross_entropy(logits, labels)  # label checks (shape, dtype, range when concrete)
  if jnp.issubdtype(labels.dtype, jnp.integer):
    targets = jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)
  else:
    targets = labels.astype(logits.dtype)
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.sum((p - targets) * logits, axis=-1)


def irm_penalty(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""IRMv1's penalty of one environment (Arjovsky et al. 2019):
  :math:`\big(\partial_w \frac1B \sum_i \mathrm{CE}(w z_i, y_i)\big|_{w=1}\big)^2`.

  Args:
    logits: ``[B, K]`` float, the examples of one environment.
    labels: ``[B]`` integer class ids or ``[B, K]`` float probabilities.

  Returns:
    ``[]`` scalar.

  Example:
    >>> float(irm_penalty(jnp.array([[0.0, 0.0]]), jnp.array([0])))  # symmetric: optimal w
    0.0
  """
  return jnp.square(jnp.mean(irm_gradients(logits, labels)))


# ------------------------------------------------------------------ host side: data, JTT, selection

NEEDS = ("group", "environment")
SELECTIONS = ("worst_group", "average")


def training_ids(dataset: Any, need: str) -> tuple[np.ndarray, str]:
  """``(ids [N], 'groups' | 'environments')``: the ids a method that needs ``need`` trains on.

  An environment method on data without environments trains on the groups.
  """
  if need not in NEEDS:
    raise ValueError(f"need must be one of {NEEDS}, got {need!r}")
  if dataset.groups is None:
    raise ValueError(f"needs {need} labels, but the training data {dataset.name} has none")
  if need == "environment" and dataset.environments is not None:
    return np.asarray(dataset.environments), "environments"
  return np.asarray(dataset.groups), "groups"


def check_training_data(dataset: Any, need: str, *, count: int = 0,
                        group_counts: Any = ()) -> np.ndarray:
  """The ``[G]`` training examples of each group (or environment) the method trains on.

  Args:
    dataset: a ``drojax.data.ArrayDataset`` (its ``groups``, ``environments``, ``name``).
    need: ``'group'`` or ``'environment'`` (``drojax.methods.needs``).
    count: the configured ``num_groups`` / ``num_environments``; 0: from the data.
    group_counts: the configured training group sizes (``need='group'``); (): from the data.

  Raises:
    ValueError: no ids of that kind, an id >= ``count``, a group with no example, fewer than 2
      environments, or ``group_counts`` that the data contradicts (one line each).

  >>> import types
  >>> ds = types.SimpleNamespace(groups=np.array([0, 1, 1]), environments=None, name="toy")
  >>> check_training_data(ds, "group").tolist()
  [1, 2]
  """
  ids, what = training_ids(dataset, need)
  field = "num_groups" if need == "group" else "num_environments"
  top = int(ids.max())
  if count and top >= count:
    raise ValueError(f"{field}={count}, but the training data has {what} ids up to {top}")
  sizes = np.bincount(ids, minlength=count or top + 1)
  if np.any(sizes == 0):
    raise ValueError(f"{what} {np.flatnonzero(sizes == 0).tolist()} of the {len(sizes)} have "
                     f"no training example in {dataset.name} (sizes {sizes.tolist()}); a "
                     f"larger train_subset, or data where every one occurs")
  if need == "environment" and len(sizes) < 2:
    raise ValueError(f"compares environments: it needs at least 2, the training data has "
                     f"{len(sizes)} ({what})")
  counts = tuple(group_counts)
  if counts and need == "group" and counts != tuple(sizes.tolist()):
    raise ValueError(f"group_counts={counts}, but the training data has "
                     f"{tuple(sizes.tolist())}")
  return sizes


def jtt_weights(ids: Any, errors: Any, *, num_examples: int, lambda_up: float) -> np.ndarray:
  """JTT's example weights (Liu et al. 2021): ``lambda_up`` for the examples the
  identification model got wrong, 1 for the others.

  Args:
    ids: ``[N]`` the training examples' ids in ``[0, num_examples)``.
    errors: ``[N]`` bool, the identification model's training errors.
    num_examples: the length of the table (``drojax.objectives.weighted_erm`` indexes it by id).
    lambda_up: the up-weight, > 0.

  Returns:
    ``[num_examples]`` float32.

  >>> jtt_weights(np.array([2, 0]), np.array([True, False]), num_examples=3,
  ...             lambda_up=6.0).tolist()
  [1.0, 1.0, 6.0]
  """
  check_static_int("num_examples", num_examples, minimum=1)
  check_scalar_range("lambda_up", lambda_up, low=0.0, low_open=True, expected="> 0")
  ids, errors = np.asarray(ids), np.asarray(errors)
  if (ids.shape != errors.shape or ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)
      or errors.dtype != np.bool_):
    raise ValueError(f"ids and errors must be [N] integer ids and [N] bool, got {ids.shape} "
                     f"{ids.dtype} and {errors.shape} {errors.dtype}")
  check_int_range("ids", ids, 0, num_examples, fix=f"(num_examples={num_examples})")
  weights = np.ones(num_examples, np.float32)
  weights[ids[errors]] = lambda_up
  return weights


def select(validation: Sequence[Mapping[str, Any]], by: str) -> int:
  """The index of the best run on validation (ties: the first) under a model-selection rule.

  Args:
    validation: per run ``{"accuracy": float, "group_accuracy": {"worst_group": float, ...}}``
      (``drojax.evaluate.group_accuracy`` on the validation split).
    by: ``'worst_group'`` (needs validation group labels) or ``'average'`` (the plain accuracy:
      no group label at all).

  >>> select([{"accuracy": 0.9, "group_accuracy": {"worst_group": 0.2}},
  ...         {"accuracy": 0.8, "group_accuracy": {"worst_group": 0.6}}], "worst_group")
  1
  """
  if not validation:
    raise ValueError("validation is empty: nothing to select from")
  return int(np.argmax([selection_score(v, by) for v in validation]))


def selection_score(validation: Mapping[str, Any], by: str) -> float:
  """One run's validation score under a model-selection rule (what :func:`select` maximises).

  Args:
    validation: ``{"accuracy": float, "group_accuracy": {"worst_group": float, ...}}``.
    by: ``'worst_group'`` (its worst-group accuracy) or ``'average'`` (its accuracy).

  >>> selection_score({"accuracy": 0.9, "group_accuracy": {"worst_group": 0.2}}, "average")
  0.9
  """
  if by not in SELECTIONS:
    raise ValueError(f"by must be one of {SELECTIONS}, got {by!r}")
  return validation["group_accuracy"]["worst_group"] if by == "worst_group" else (
      validation["accuracy"])


def summarize_by_group(var: Any, weight: Any, *, groups: Any = None,
                       flipped: Any = None) -> dict[str, float]:
  """Var-DRO's tracked loss variances and example weights, by group and by flipped label.

  Args:
    var: ``[N]`` tracked loss variance of every training example.
    weight: ``[N]`` each example's weight in its batch times the batch size (1 = uniform);
      NaN for an example in no batch (the dropped last partial batch).
    groups: optional ``[N]`` int group ids; the minority groups are those smaller than the
      median group.
    flipped: optional ``[N]`` bool, the examples whose label was flipped (label noise).

  Returns:
    ``var_group<g>`` / ``weight_group<g>`` (means), ``minority_share_top10`` /
    ``_all`` (the share of minority-group examples among the 10 % of highest variance, and in
    all), and the same with ``flipped`` / ``clean`` and ``flipped_share_top10`` / ``_all``.

  >>> summarize_by_group(np.array([1.0, 3.0]), np.array([1.0, np.nan]),
  ...                    groups=np.array([0, 1]))["var_group1"]
  3.0
  """
  var, weight = np.asarray(var), np.asarray(weight)
  if var.ndim != 1 or var.shape != weight.shape:
    raise ValueError(f"var and weight must both be [N], got {var.shape} and {weight.shape}")
  if np.isnan(var).any():
    raise ValueError("var must not hold NaN (the tracker's variances are finite)")
  groups, flipped = (None if a is None else np.asarray(a) for a in (groups, flipped))
  for name, labels in (("groups", groups), ("flipped", flipped)):
    if labels is not None and labels.shape != var.shape:
      raise ValueError(f"{name} must be [N]={var.shape}, like var, got {labels.shape}")
  if groups is not None and (not np.issubdtype(groups.dtype, np.integer) or groups.min() < 0):
    raise ValueError(f"groups must be integer ids >= 0, got {groups.dtype} values from "
                     f"{groups.min()}")
  out: dict[str, float] = {}
  seen = ~np.isnan(weight)
  top = var >= np.quantile(var, 0.9)
  parts = []
  if groups is not None:
    sizes = np.bincount(groups)
    minority = np.isin(groups, np.flatnonzero(sizes < np.median(sizes)))
    parts += [(f"group{g}", groups == g) for g in np.unique(groups)]
    out["minority_share_top10"] = float(minority[top].mean())
    out["minority_share_all"] = float(minority.mean())
  if flipped is not None:
    flipped = flipped.astype(bool)
    parts += [("flipped", flipped), ("clean", ~flipped)]
    out["flipped_share_top10"] = float(flipped[top].mean())
    out["flipped_share_all"] = float(flipped.mean())
  for name, m in parts:
    out[f"var_{name}"] = float(var[m].mean())
    out[f"weight_{name}"] = float(weight[m & seen].mean())
  return out
