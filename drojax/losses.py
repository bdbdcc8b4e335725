"""Per-example losses and robust objectives: W-DRO variation penalty, KL-DRO, CVaR, JSD.

Per-example losses return shape ``[B]``; reducing them is the objective's job. The Wasserstein
DRO objective of DRO-Augment (arXiv 2506.17874) is approximated by the variation penalty

.. math::

  \\mathcal{L}(\\theta) = \\frac1B \\sum_i \\ell_i(\\theta, x_i)
    + \\rho \\Big(\\frac1B \\sum_i \\|\\nabla_{x_i} \\textstyle\\sum_j \\ell_j\\|_*^q\\Big)^{1/q},

whose parameter gradient is a gradient of a gradient (``wdro_loss``). Unlike the public
DRO-Augment code, where the penalty is a detached number, here it changes the parameter gradient.

Models meet this module as closures ``loss_fn(x, *args) -> [B]`` over their variables, so the
pure core never touches Flax state. Inputs ``x`` are images NHWC float32 in [0, 1] (or any
``[B, ...]`` float array). This module imports JAX only (no Flax, Optax, Orbax or TFDS).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_float as _check_float
from drojax._checks import is_concrete as _is_concrete

__all__ = [
    "DEFAULT_FD_STEP",
    "PENALTY_MODES",
    "WDROAux",
    "cross_entropy",
    "cvar_loss",
    "input_gradients",
    "jsd_consistency",
    "kl_dro_loss",
    "variation_penalty",
    "wdro_loss",
]

PENALTY_MODES = ("exact", "forward_over_reverse", "finite_difference")

# Relative step of the finite-difference penalty gradient: the input batch moves by
# DEFAULT_FD_STEP * ||x||_2 along a unit-norm direction; see ``wdro_loss``.
DEFAULT_FD_STEP = 5e-3

# AugMix clamps the mixture probabilities at this value before taking its log.
_JSD_CLAMP = 1e-7


# ----------------------------------------------------------------------------------------------
# Input checks: shapes and dtypes at trace time, values only when concrete (outside jit).


def _check_scalar_range(name: str, value: Any, *, low: float, high: float = math.inf,
                        low_open: bool = False, expected: str) -> None:
  if not _is_concrete(value):
    return
  v = np.asarray(value)
  if v.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {v.shape}.")
  v = float(v)
  bad = math.isnan(v) or v > high or (v <= low if low_open else v < low)
  if bad:
    raise ValueError(f"{name} must be {expected}, got {value}.")


def _check_batched_args(args: Sequence[Any], batch: int) -> None:
  for i, a in enumerate(args):
    for leaf in jax.tree_util.tree_leaves(a):
      shape = jnp.shape(leaf)
      if not shape or shape[0] != batch:
        raise ValueError(f"args[{i}] must be batched along axis 0 like x (batch {batch}), got "
                         f"a leaf of shape {shape}.")


def _check_losses_out(losses: Any, batch: int) -> jax.Array:
  shape = jnp.shape(losses)
  if shape != (batch,):
    raise ValueError(f"loss_fn must return per-example losses of shape [B]=({batch},), got "
                     f"shape {shape}; do not reduce the batch inside loss_fn.")
  return losses


# ----------------------------------------------------------------------------------------------
# Per-example losses.


def cross_entropy(logits: jax.Array, labels: jax.Array, *,
                  label_smoothing: float = 0.0) -> jax.Array:
  r"""Per-example softmax cross-entropy with optional label smoothing.

  .. math::

    \ell_i = -\sum_k t_{ik} \log \mathrm{softmax}(z_i)_k, \qquad
    t_i = (1 - s)\, y_i + s / K,

  where :math:`y_i` is the one-hot label (integer ``labels``) or the given probability row.

  Args:
    logits: ``[B, K]`` float.
    labels: ``[B]`` integer class ids in ``[0, K)``, or ``[B, K]`` float probabilities.
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
  _check_scalar_range("label_smoothing", label_smoothing, low=0.0, high=1.0,
                      expected="in [0, 1]")
  if jnp.issubdtype(labels.dtype, jnp.integer):
    if labels.shape != (b,):
      raise ValueError(f"labels must have shape [B]=({b},) (integer ids) or [B, K]={logits.shape}"
                       f" (probabilities), got shape {labels.shape}.")
    targets = jax.nn.one_hot(labels, k, dtype=logits.dtype)
  elif jnp.issubdtype(labels.dtype, jnp.floating):
    if labels.shape != logits.shape:
      raise ValueError(f"probability labels must have the shape of logits {logits.shape}, got "
                       f"{labels.shape}.")
    targets = labels.astype(logits.dtype)
  else:
    raise TypeError(f"labels must be integer ids or float probabilities, got dtype "
                    f"{labels.dtype}.")
  targets = (1.0 - label_smoothing) * targets + label_smoothing / k
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def input_gradients(loss_fn: Callable[..., Any], x: jax.Array, *args: Any,
                    has_aux: bool = False) -> jax.Array | tuple[jax.Array, Any]:
  r"""Gradient of the batch's summed loss with respect to the inputs.

  Returns :math:`g = \nabla_x \sum_i \ell_i(x)`, with the shape of ``x``. When examples do not
  interact (no train-mode BatchNorm), row ``i`` is :math:`\nabla_{x_i} \ell_i`; with BatchNorm in
  train mode it also carries the other examples' dependence on ``x_i`` through the batch
  statistics (the same quantity the PyTorch reference differentiates).

  Args:
    loss_fn: ``loss_fn(x, *args) -> [B]`` per-example losses, or ``([B], aux)`` with
      ``has_aux``.
    x: ``[B, ...]`` float inputs.
    *args: extra arguments of ``loss_fn``, each batched along axis 0 (e.g. targets ``[B, K]``).
    has_aux: whether ``loss_fn`` also returns an auxiliary value (static).

  Returns:
    ``grads`` with the shape of ``x``, or ``(grads, aux)`` with ``has_aux``.

  Example:
    >>> import jax.numpy as jnp
    >>> input_gradients(lambda x: jnp.sum(x ** 2, axis=1), jnp.array([[1.0, 2.0]])).tolist()
    [[2.0, 4.0]]
  """
  losses, vjp_fn, aux = _losses_and_vjp(loss_fn, x, args, has_aux)
  (grads,) = vjp_fn(jnp.ones_like(losses))
  return (grads, aux) if has_aux else grads


def _losses_and_vjp(loss_fn, x, args, has_aux):
  x = _check_float("x", x, min_rank=1)
  _check_batched_args(args, x.shape[0])

  def f(x_):
    return loss_fn(x_, *args)

  if has_aux:
    losses, vjp_fn, aux = jax.vjp(f, x, has_aux=True)
  else:
    (losses, vjp_fn), aux = jax.vjp(f, x), None
  _check_losses_out(losses, x.shape[0])
  return losses, vjp_fn, aux


# ----------------------------------------------------------------------------------------------
# Variation penalty.


def _dual_exponent(norm: float) -> float:
  if norm == 1:
    return math.inf
  if math.isinf(norm):
    return 1.0
  return norm / (norm - 1.0)


def _safe_pow(x: jax.Array, p: float) -> jax.Array:
  """``x ** p`` for ``x >= 0`` with a finite (zero) gradient at ``x == 0`` even when ``p < 1``."""
  pos = x > 0
  return jnp.where(pos, jnp.where(pos, x, 1.0) ** p, 0.0)


def _abs(x: jax.Array) -> jax.Array:
  """``|x|`` whose gradient at exactly 0 is 0 (the minimal-norm subgradient)."""
  return jnp.where(x != 0, jnp.abs(x), 0.0)


def _dual_norms(grads: jax.Array, norm: float) -> jax.Array:
  """``[B]`` dual norms over all non-batch axes, with finite gradients at zero."""
  flat = grads.reshape(grads.shape[0], -1)
  r = _dual_exponent(norm)
  if math.isinf(r):
    return jnp.max(_abs(flat), axis=1)
  if r == 1.0:
    return jnp.sum(_abs(flat), axis=1)
  if r == 2.0:
    return _safe_pow(jnp.sum(flat * flat, axis=1), 0.5)
  return _safe_pow(jnp.sum(_safe_pow(_abs(flat), r), axis=1), 1.0 / r)


def _reduce_norms(norms: jax.Array, q: float, axis_name: Any) -> jax.Array:
  """(mean_i n_i^q)^(1/q) (max for q = inf), over the global batch when ``axis_name`` is set."""
  if math.isinf(q):
    local = jnp.max(norms)
    if axis_name is None:
      return local
    # pmax has no differentiation rule: find the global max without gradient, then route the
    # gradient to the device(s) holding it through psum (ties split evenly).
    top = jax.lax.pmax(jax.lax.stop_gradient(local), axis_name)
    holds = (jax.lax.stop_gradient(local) >= top).astype(norms.dtype)
    return jax.lax.psum(holds * local, axis_name) / jax.lax.psum(holds, axis_name)
  powered = norms if q == 1.0 else _safe_pow(norms, q)
  total = jnp.sum(powered)
  count = jnp.asarray(norms.shape[0], norms.dtype)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = jax.lax.psum(count, axis_name)
  mean = total / count
  return mean if q == 1.0 else _safe_pow(mean, 1.0 / q)


def _check_q_norm(q: Any, norm: Any) -> tuple[float, float]:
  for name, v in (("q", q), ("norm", norm)):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
      raise TypeError(f"{name} must be a Python number (static), got {type(v).__name__}.")
    if math.isnan(float(v)) or float(v) < 1:
      raise ValueError(f"{name} must be in [1, inf], got {v}.")
  return float(q), float(norm)


def variation_penalty(grads: jax.Array, *, q: float = 2.0, norm: float = 2,
                      axis_name: Any = None) -> jax.Array:
  r"""DRO-Augment's variation regularizer of input gradients.

  .. math::

    P(g) = \Big(\frac1N \sum_{i=1}^N \|g_i\|_*^q\Big)^{1/q}
    \quad (q = \infty:\ \max_i \|g_i\|_*),

  where :math:`\|\cdot\|_*` is the dual of the ground-cost norm ``norm`` (2 -> 2, inf -> 1,
  1 -> inf, p -> p/(p-1)) over all non-batch axes of ``g_i``. The gradient is finite (zero
  contribution) where some :math:`g_i` is exactly zero, and where all are.

  Args:
    grads: ``[B, ...]`` float input gradients (``input_gradients``).
    q: exponent in ``[1, inf]`` (static Python number).
    norm: ground-cost norm ``p`` in ``[1, inf]`` (static); the dual norm is applied.
    axis_name: inside ``shard_map``/``pmap``/named ``vmap``, the mapped axis the batch is split
      over: the mean (max for ``q = inf``) is then over the global batch, via ``psum`` of the
      local sums and counts (so N devices give the 1-device value). ``None``: the local batch.
      Tested under ``shard_map`` (``check_vma=True``), where ``jax.grad`` of the ``pmean`` of
      ``wdro_loss``'s total matches one device; under a named ``vmap`` only values match (its
      ``psum`` transposes to a sum of cotangents).

  Returns:
    ``[]`` penalty in the dtype of ``grads``.

  Example:
    >>> import jax.numpy as jnp
    >>> g = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    >>> float(variation_penalty(g, q=1.0))  # mean of the 2-norms 5 and 0
    2.5
    >>> round(float(variation_penalty(g, q=2.0, norm=jnp.inf)), 4)  # sqrt(mean of 7**2, 0)
    4.9497
  """
  q, norm = _check_q_norm(q, norm)
  grads = _check_float("grads", grads, min_rank=1)
  return _reduce_norms(_dual_norms(grads, norm), q, axis_name)


# ----------------------------------------------------------------------------------------------
# W-DRO loss.


class WDROAux(NamedTuple):
  """Diagnostics of ``wdro_loss``.

  Attributes:
    mean_loss: ``[]`` local mean of the per-example losses.
    penalty: ``[]`` the variation penalty (global when ``axis_name`` is given).
    losses: ``[B]`` per-example losses of the unperturbed call.
    fn_aux: ``loss_fn``'s aux of the unperturbed, full-batch call, or ``None``.
  """

  mean_loss: jax.Array
  penalty: jax.Array
  losses: jax.Array
  fn_aux: Any


def _penalty_and_direction(g: jax.Array, q: float, norm: float, axis_name: Any):
  """Penalty value and ``v = dP/dg`` for the local ``g`` (no collective is differentiated)."""

  def local_penalty(g_):
    norms = _dual_norms(g_, norm)
    if axis_name is None:
      return _reduce_norms(norms, q, None)
    if math.isinf(q):
      local = jnp.max(norms)
      top = jax.lax.pmax(jax.lax.stop_gradient(local), axis_name)
      holds = (jax.lax.stop_gradient(local) >= top).astype(norms.dtype)
      share = holds / jax.lax.psum(holds, axis_name)
      return top + share * (local - jax.lax.stop_gradient(local))
    powered = norms if q == 1.0 else _safe_pow(norms, q)
    local_sum = jnp.sum(powered)
    total = jax.lax.psum(jax.lax.stop_gradient(local_sum), axis_name)
    count = jax.lax.psum(jnp.asarray(norms.shape[0], norms.dtype), axis_name)
    # Value of the global sum, gradient of the local part only.
    mean = (total + local_sum - jax.lax.stop_gradient(local_sum)) / count
    return mean if q == 1.0 else _safe_pow(mean, 1.0 / q)

  return jax.value_and_grad(local_penalty)(g)


def _take(tree: Any, idx: jax.Array) -> Any:
  return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), tree)


def _tree_axpby(a_coef: jax.Array, a: Any, b_coef: jax.Array, b: Any) -> Any:
  """``a_coef * a + b_coef * b`` leafwise; integer leaves (``float0`` cotangents) pass through."""

  def one(u, v):
    if u.dtype == jax.dtypes.float0:
      return u
    return (a_coef * u + b_coef * v).astype(u.dtype)

  return jax.tree_util.tree_map(one, a, b)


def _tree_scale(coef: jax.Array, tree: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda u: u if u.dtype == jax.dtypes.float0 else (coef * u).astype(u.dtype), tree)


def _scatter_rows(tree: Any, idx: jax.Array, batch: int) -> Any:
  """Rows ``idx`` of ``[m, ...]`` leaves placed into zero ``[batch, ...]`` leaves."""

  def one(u):
    if u.dtype == jax.dtypes.float0:
      return np.zeros((batch,) + u.shape[1:], jax.dtypes.float0)
    return jnp.zeros((batch,) + u.shape[1:], u.dtype).at[idx].add(u)

  return jax.tree_util.tree_map(one, tree)


def _add_cotangents(u, v):
  return u if u.dtype == jax.dtypes.float0 else u + v


def _vma(a: Any) -> frozenset:
  """The mesh axes ``a`` varies over inside ``shard_map`` (empty outside)."""
  manual = getattr(jax.typeof(a), "manual_axis_type", None)
  return frozenset(getattr(manual, "varying", ()))


def _vary_like(tree: Any, axis_name: Any, like: jax.Array) -> Any:
  """Marks leaves as varying over ``axis_name`` where ``like`` is (inside ``shard_map``)."""
  if axis_name not in _vma(like):
    return tree

  def one(a):
    return a if axis_name in _vma(a) else jax.lax.pcast(a, axis_name, to="varying")

  return jax.tree_util.tree_map(one, tree)


def _match_varying_axes(cotangents: Any, in_vma: Any) -> Any:
  """``psum``s each cotangent over the mesh axes it varies on but its input did not.

  Under ``shard_map`` a replicated input (parameters) used with per-device data is implicitly
  broadcast; the transpose of that broadcast is a ``psum``, which a ``custom_vjp`` backward has
  to apply itself. ``in_vma``: the inputs' ``jax.typeof(a).vma``, same structure as the inputs
  (``None`` cotangents and their subtrees are skipped).
  """

  def one(ct, vma):
    if ct is None or ct.dtype == jax.dtypes.float0:
      return ct
    extra = tuple(sorted(_vma(ct) - vma))
    return jax.lax.psum(ct, extra) if extra else ct

  return tuple(
      None if ct is None else jax.tree_util.tree_map(one, ct, vma)
      for ct, vma in zip(cotangents, in_vma))


def _is_symbolic_zero(tree: Any) -> bool:
  leaves = jax.tree_util.tree_leaves(
      tree, is_leaf=lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero))
  return all(isinstance(t, jax.custom_derivatives.SymbolicZero) for t in leaves)


def _finite_difference_surrogate(loss_fn, px, pargs, p_losses, g, *, q, norm, has_aux,
                                 axis_name, fd_step):
  """``(penalty, term)``: a term whose value is the penalty and whose gradient is its estimate.

  ``sg(P) + s (L(x_p + h u) - L(x_p)) - sg(.)`` with ``s = ||v|| / h``: one extra forward and
  backward at ``x_p + h u``, on top of the backward that gave ``g`` (the general form, used
  where ``_shared_backward_wdro`` does not apply: a named axis of size > 1 outside
  ``shard_map``, e.g. ``pmap`` or a named ``vmap``). ``u`` and ``h`` are per device there.
  """
  g = jax.lax.stop_gradient(g)
  penalty, v = _penalty_and_direction(g, q, norm, axis_name)
  v_norm = jnp.sqrt(jnp.sum(v * v))
  u = v / jnp.where(v_norm > 0, v_norm, 1.0)
  u = jax.lax.stop_gradient(u.astype(px.dtype))
  h = fd_step * jnp.sqrt(jnp.sum(jax.lax.stop_gradient(px).astype(jnp.float32) ** 2))
  h = jnp.where(h > 0, h, fd_step)  # an all-zero batch: fall back to an absolute step
  out = loss_fn(px + (h * u).astype(px.dtype), *pargs)
  p_losses_h = out[0] if has_aux else out
  _check_losses_out(p_losses_h, px.shape[0])
  scale = jax.lax.stop_gradient(v_norm / h)
  if axis_name is not None:
    scale = scale * jax.lax.psum(1, axis_name)
  diff = scale * (jnp.sum(p_losses_h) - jnp.sum(p_losses))
  return penalty, jax.lax.stop_gradient(penalty) + diff - jax.lax.stop_gradient(diff)


def _axis_size(axis_name: Any) -> int:
  return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


def _shared_backward_wdro(loss_fn, x, args, *, rho, q, norm, has_aux, axis_name, mode, fd_step,
                          idx):
  """``wdro_loss`` as one ``custom_vjp``: ``(total, penalty, losses, fn_aux)``.

  The forward pass computes the whole gradient, so that the one backward at ``x`` that gives
  the mean loss's gradient also gives the input gradient ``g`` the penalty needs (autodiff of
  ``wdro_loss``'s other forms runs a separate backward for ``g``). The penalty's gradient
  (w.r.t. the parameters, the penalty batch's inputs and args) is then

  * ``"finite_difference"``: ``s (dL_p(x_p + h u) - dL_p(x_p))`` with ``s = ||v|| / h``, one
    more forward and backward;
  * ``"forward_over_reverse"``: the jvp of ``dL_p`` along ``v = dP/dg`` (``jax.linearize`` of
    the gradient pass), exact: :math:`\\nabla_\\theta \\langle v, \\nabla_x L\\rangle =
    \\partial_\\epsilon \\nabla_\\theta L(x + \\epsilon v)` by symmetry of mixed partials;

  where ``L_p`` is the penalty batch's summed loss (the whole batch when ``idx`` is ``None``).
  The parameters ``loss_fn`` closes over are made explicit with ``jax.closure_convert``.
  Inside ``shard_map`` their gradients come out of the inner vjp already summed over the axis
  (the transpose of their implicit broadcast), so the finite difference takes one direction
  and one step for the global batch (a single ``s``), and the backward weights the summed
  gradients by summed coefficients; a cotangent that differs between devices (not the
  ``pmean`` of the train step) makes it recompute the mean loss's gradient per device.
  ``losses`` (and ``mean_loss``) may be differentiated too (at the cost of one more backward);
  ``fn_aux`` may not.

  ``idx``: ``[m]`` int rows the penalty is taken on (``subsample < 1``), or ``None`` (all rows).
  """
  b = x.shape[0]
  axis_size = _axis_size(axis_name)

  def call(xx, aa):
    out = loss_fn(xx, *aa)
    return out if has_aux else (out, None)

  full_fn, full_consts = jax.closure_convert(call, x, args)
  if idx is None:
    sub_fn, sub_consts = full_fn, ()
  else:
    sub_fn, sub_consts = jax.closure_convert(call, x[idx], _take(args, idx))

  def losses_of(fn, consts, xx, aa):
    losses, fn_aux = fn(xx, aa, *consts)
    _check_losses_out(losses, xx.shape[0])
    return losses, fn_aux

  def grads_of(fn, consts, xx, aa):
    """The gradient of the summed loss w.r.t. ``(consts, xx, aa)``; aux ``(losses, fn_aux)``."""
    losses, vjp_fn, fn_aux = jax.vjp(lambda c, xx_, aa_: losses_of(fn, c, xx_, aa_), consts,
                                     xx, aa, has_aux=True)
    return vjp_fn(jnp.ones_like(losses)), (losses, fn_aux)

  def penalty_inputs(xx, aa):
    return (xx, aa) if idx is None else (xx[idx], _take(aa, idx))

  def primal(full_consts, sub_consts, x, args, rho):
    (_, g, _), (losses, fn_aux) = grads_of(full_fn, full_consts, x, args)
    if idx is not None:
      (_, g, _), _ = grads_of(sub_fn, sub_consts, *penalty_inputs(x, args))
    penalty = variation_penalty(g, q=q, norm=norm, axis_name=axis_name)
    return jnp.mean(losses) + rho * penalty, penalty, losses, fn_aux

  def fwd(full_consts, sub_consts, x, args, rho):
    full_consts, sub_consts, x, args, rho = jax.tree_util.tree_map(
        lambda p: p.value, (full_consts, sub_consts, x, args, rho),
        is_leaf=lambda t: isinstance(t, jax.custom_derivatives.CustomVJPPrimal))
    p_fn, p_consts = (full_fn, full_consts) if idx is None else (sub_fn, sub_consts)
    px, pargs = penalty_inputs(x, args)
    linearized = None
    if mode == "forward_over_reverse":
      p_grads, linearized, p_aux = jax.linearize(
          lambda xx: grads_of(p_fn, p_consts, xx, pargs), px, has_aux=True)
    else:
      p_grads, p_aux = grads_of(p_fn, p_consts, px, pargs)
    if idx is None:
      sum_grads, (losses, fn_aux) = p_grads, p_aux  # the shared backward
    else:
      sum_grads, (losses, fn_aux) = grads_of(full_fn, full_consts, x, args)
    penalty, v = _penalty_and_direction(p_grads[1], q, norm, axis_name)
    if mode == "forward_over_reverse":
      penalty_grads = linearized(v.astype(px.dtype))
    else:
      sq_v, sq_x = jnp.sum(v * v), jnp.sum(px.astype(jnp.float32) ** 2)
      if axis_name is not None:  # one direction and one step for the global batch
        sq_v, sq_x = jax.lax.psum(sq_v, axis_name), jax.lax.psum(sq_x, axis_name)
      v_norm = jnp.sqrt(sq_v)
      u = (v / jnp.where(v_norm > 0, v_norm, 1.0)).astype(px.dtype)
      h = fd_step * jnp.sqrt(sq_x)
      h = jnp.where(h > 0, h, fd_step)  # an all-zero batch: fall back to an absolute step
      h_grads, _ = grads_of(p_fn, p_consts, px + (h * u).astype(px.dtype), pargs)
      scale = v_norm / h
      penalty_grads = _tree_axpby(-scale, p_grads, scale, h_grads)
    total = jnp.mean(losses) + rho * penalty
    residuals = (sum_grads, penalty_grads, penalty, rho, full_consts, x, args)
    return (total, penalty, losses, fn_aux), residuals

  def recomputed_grads(full_consts, x, args, seed):
    _, vjp_fn, _ = jax.vjp(lambda c, xx, aa: losses_of(full_fn, c, xx, aa), full_consts, x, args,
                           has_aux=True)
    return vjp_fn(seed)

  def bwd(res, cts):
    sum_grads, penalty_grads, penalty, rho, full_consts, x, args = res
    ct_total, ct_penalty, ct_losses, ct_aux = cts
    if not _is_symbolic_zero(ct_aux):
      raise ValueError(
          f"wdro_loss(mode={mode!r}): loss_fn's aux (fn_aux) carries no gradient in this "
          f"mode; differentiate the total (or mean_loss, losses), or use mode='exact'.")
    zero = lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero)
    ct_total = jnp.zeros((), jnp.float32) if zero(ct_total) else ct_total
    ct_penalty = jnp.zeros((), penalty.dtype) if zero(ct_penalty) else ct_penalty
    # d/d(consts, x, args) of (mean loss + rho * penalty) * ct_total + penalty * ct_penalty,
    # summed over the devices of the axis. The penalty is global (every device's total holds
    # it), so its gradients are weighted by the sum of the devices' coefficients. The mean loss
    # is local: its input and args gradients are weighted by this device's ct, and its consts
    # gradient, which came out of the inner vjp already summed over the axis (the transpose of
    # the replicated parameters' implicit broadcast), by the mean ct (see the check below).
    pen_coef = ct_total * rho + ct_penalty
    if axis_name is None:
      consts_mean_coef, pen_coef_sum = ct_total / b, pen_coef
    else:
      ct_total, pen_coef = _vary_like((ct_total, pen_coef), axis_name, x)
      consts_mean_coef = jax.lax.pmean(ct_total, axis_name) / b
      pen_coef_sum = jax.lax.psum(pen_coef, axis_name)
    d_full_consts = _tree_scale(consts_mean_coef, sum_grads[0])
    if axis_size > 1:
      # pmean(ct) * (summed gradient) is each device's own gradient weighted by its own ct only
      # when all cts are equal (what the train step's pmean gives); otherwise recompute.
      uniform = jax.lax.pmax(ct_total, axis_name) == jax.lax.pmin(ct_total, axis_name)
      d_full_consts = jax.lax.cond(
          uniform, lambda: d_full_consts,
          lambda: recomputed_grads(full_consts, x, args,
                                   jnp.full((b,), ct_total / b, jnp.float32))[0])
    d_rest = _tree_scale(ct_total / b, sum_grads[1:])
    d_pen_consts = _tree_scale(pen_coef_sum, penalty_grads[0])
    d_pen_rest = _tree_scale(pen_coef_sum, penalty_grads[1:])
    if not zero(ct_losses):  # rare (the train step never does it): one more forward/backward
      extra = recomputed_grads(full_consts, x, args, ct_losses)
      d_full_consts = jax.tree_util.tree_map(_add_cotangents, d_full_consts, extra[0])
      d_rest = jax.tree_util.tree_map(_add_cotangents, d_rest, extra[1:])
    if idx is None:
      d_full_consts = jax.tree_util.tree_map(_add_cotangents, d_full_consts, d_pen_consts)
      d_rest = jax.tree_util.tree_map(_add_cotangents, d_rest, d_pen_rest)
      d_sub_consts = None
    else:
      d_sub_consts = d_pen_consts
      d_rest = jax.tree_util.tree_map(_add_cotangents, d_rest,
                                      _scatter_rows(d_pen_rest, idx, b))
    d_x, d_args = d_rest
    cts_in = (d_full_consts, d_sub_consts, d_x, d_args, (ct_total * penalty).astype(jnp.float32))
    return _match_varying_axes(cts_in, in_vma)

  rho = jnp.asarray(rho, jnp.float32)
  in_vma = jax.tree_util.tree_map(_vma, (full_consts, sub_consts, x, args, rho))
  total_fn = jax.custom_vjp(primal)
  total_fn.defvjp(fwd, bwd, symbolic_zeros=True)
  return total_fn(full_consts, sub_consts, x, args, rho)


def wdro_loss(loss_fn: Callable[..., Any], x: jax.Array, *args: Any, rho: float | jax.Array,
              q: float = 2.0, norm: float = 2, has_aux: bool = False, axis_name: Any = None,
              mode: str = "exact", fd_step: float = DEFAULT_FD_STEP, subsample: float = 1.0,
              key: jax.Array | None = None) -> tuple[jax.Array, WDROAux]:
  r"""DRO-Augment's W-DRO objective: mean loss plus ``rho`` times the variation penalty.

  .. math::

    \mathrm{total} = \frac1B \sum_i \ell_i(x) + \rho\, P\big(\nabla_x \textstyle\sum_j
      \ell_j(x)\big)

  with :math:`P` = ``variation_penalty``. ``jax.grad`` of ``total`` with respect to parameters
  closed over by ``loss_fn`` includes the penalty's gradient.

  Modes of the penalty's parameter gradient (the value is the same in all three):

  * ``"exact"``: a gradient of a gradient. The losses and the input gradients come from one
    ``jax.vjp`` (a single forward pass), which ``jax.grad`` then differentiates.
  * ``"forward_over_reverse"``: the same exact gradient, as the jvp of the gradient pass along
    :math:`v = \partial P / \partial g` (:math:`\nabla_\theta \langle v, \nabla_x L\rangle =
    \partial_\epsilon \nabla_\theta L(x + \epsilon v)`, ``jax.linearize``), and the backward
    that gives :math:`g` also gives the mean loss's gradient. About 10% cheaper than
    ``"exact"`` for PreActResNet-18 on CPU (``docs/benchmarks.md``); agrees with it to float32
    rounding.
  * ``"finite_difference"``: with :math:`L(x) = \sum_i \ell_i(x)`, :math:`g = \nabla_x L`
    (held constant) and :math:`v = \partial P / \partial g`, the chain rule gives
    :math:`\nabla_\theta P = \nabla_\theta \langle v, \nabla_x L\rangle
    \approx \|v\|\,(\nabla_\theta L(x + h u) - \nabla_\theta L(x)) / h` with
    :math:`u = v / \|v\|` (unit norm over the whole local batch): one extra forward/backward at
    ``x + h u`` instead of a double backward. The aux of the perturbed call (e.g. BatchNorm
    statistics) is discarded. Step: ``h = fd_step * ||x||_2`` (norm of the whole local batch the
    penalty is taken on), so an example moves on average by ``fd_step`` times the RMS example
    norm, whatever the batch and image sizes. Error: the forward difference has a truncation
    error :math:`O(h)` and a float32 rounding error of about
    :math:`10^{-7}\,\|\nabla_\theta L\|\,\|v\| / h`, which grows with the batch since
    :math:`L` is a sum; and in a ReLU network the input gradient jumps where a unit changes
    sign, so a step that crosses such kinks (a deep net crosses many at any usable ``h``) adds
    terms the exact (almost-everywhere) derivative does not have, which do not shrink with
    ``h``. Measured cosine similarity to the exact penalty gradient: >= 0.99 on the small test
    models at the default ``DEFAULT_FD_STEP = 5e-3`` (``tests/test_losses.py``), about 0.975 on
    a 3-layer ReLU CNN, but only 0.33-0.64 on PreActResNet-18 (width 16, 128 CIFAR-10 test
    images, train-mode BatchNorm) for relative steps 1e-3..2e-2 in float32
    (``benchmarks/penalty_accuracy.py``), and in float64 (32 images) 0.39 at 5e-3 falling to
    0.01 at 1e-6: smaller steps make it worse, as expected of kinks, not of rounding. It is a
    cheap, biased direction, not an approximation of the exact gradient on such models: use
    ``"forward_over_reverse"`` or ``"exact"`` where the gradient must be right.

  Without an axis, on one of size 1, or inside ``shard_map`` (any size), the two cheaper modes
  run as one ``custom_vjp`` whose forward pass computes the gradient (``jax.closure_convert``
  makes the parameters ``loss_fn`` closes over explicit), so that one backward gives the mean
  loss's parameter gradient and ``g`` together; ``fn_aux`` then cannot be differentiated (a
  clear error) and forward-mode autodiff of ``total`` is not available. There the finite
  difference uses one unit direction and one step for the global batch, so N devices give the
  one-device estimate. On another named axis of size > 1 (``pmap``, a named ``vmap``)
  ``"forward_over_reverse"`` falls back to ``"exact"`` and ``"finite_difference"`` to a
  surrogate, :math:`\mathrm{sg}(P) + s(L(x+hu) - L(x)) - \mathrm{sg}(\cdot)` with a per-device
  direction and step, scaled by the axis size so that a ``pmean`` of ``total`` sums the
  devices' contributions.

  ``subsample = f < 1`` takes the penalty on ``m = max(1, round(f * B))`` examples drawn without
  replacement with ``key`` (``x`` and every ``*args`` indexed together, a separate call of
  ``loss_fn`` on them); the mean loss still uses the whole batch. The estimate is unbiased for
  ``q = 1`` when examples do not interact (no train-mode BatchNorm); for ``q > 1`` the
  :math:`(\cdot)^{1/q}` of a sample mean is biased low (Jensen), and for ``q = inf`` the sampled
  max is a lower bound. Composes with both modes.

  Args:
    loss_fn: ``loss_fn(x, *args) -> [B]`` per-example losses (``([B], aux)`` with
      ``has_aux``); a closure over the model's variables.
    x: ``[B, ...]`` float inputs (NHWC images in [0, 1]).
    *args: extra batched arguments of ``loss_fn`` (e.g. targets ``[B, K]``).
    rho: penalty weight ``>= 0`` (a float or a traced scalar).
    q: penalty exponent in ``[1, inf]`` (static).
    norm: ground-cost norm in ``[1, inf]`` (static); the dual norm is applied to gradients.
    has_aux: whether ``loss_fn`` returns ``(losses, aux)`` (static).
    axis_name: mapped axis for a global-batch penalty (see ``variation_penalty``); the mean loss
      in ``total`` stays LOCAL (the train step ``pmean``s the scalar).
    mode: one of ``PENALTY_MODES``: ``"exact"``, ``"forward_over_reverse"`` or
      ``"finite_difference"`` (static).
    fd_step: relative step ``> 0`` of the finite-difference mode (static); the input moves by
      ``fd_step * ||x||_2``.
    subsample: fraction ``f`` in ``(0, 1]`` of the batch the penalty is taken on (static).
    key: PRNG key, required when ``subsample < 1``.

  Returns:
    ``(total, WDROAux)`` with ``total`` a ``[]`` scalar.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -2.0])
    >>> loss_fn = lambda x: (x @ w) ** 2 / 2     # per-example gradient (x_i . w) w
    >>> total, aux = wdro_loss(loss_fn, jnp.array([[1.0, 1.0]]), rho=0.5, q=1.0)
    >>> float(aux.mean_loss), round(float(aux.penalty), 4)   # |x.w| * |w| = sqrt(5)
    (0.5, 2.2361)
  """
  if mode not in PENALTY_MODES:
    raise ValueError(f"mode must be one of {PENALTY_MODES}, got {mode!r}.")
  q, norm = _check_q_norm(q, norm)
  _check_scalar_range("rho", rho, low=0.0, expected=">= 0")
  if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float)) or not fd_step > 0:
    raise ValueError(f"fd_step must be a positive Python float, got {fd_step!r}.")
  if isinstance(subsample, bool) or not isinstance(subsample, (int, float)) or not (
      0.0 < subsample <= 1.0):
    raise ValueError(f"subsample must be a Python float in (0, 1], got {subsample!r}.")
  x = _check_float("x", x, min_rank=1)
  b = x.shape[0]
  _check_batched_args(args, b)
  if subsample < 1.0 and key is None:
    raise ValueError(f"key is required when subsample < 1 (got subsample={subsample}): pass a "
                     f"PRNG key, e.g. key=jax.random.key(0).")

  m = max(1, int(round(subsample * b)))
  idx = jax.random.permutation(key, b)[:m] if subsample < 1.0 else None
  if mode != "exact" and (_axis_size(axis_name) == 1 or axis_name in _vma(x)):
    total, penalty, losses, fn_aux = _shared_backward_wdro(
        loss_fn, x, tuple(args), rho=rho, q=q, norm=norm, has_aux=has_aux, axis_name=axis_name,
        mode=mode, fd_step=float(fd_step), idx=idx)
    return total, WDROAux(mean_loss=jnp.mean(losses), penalty=jax.lax.stop_gradient(penalty),
                          losses=losses, fn_aux=fn_aux)

  losses, vjp_fn, fn_aux = _losses_and_vjp(loss_fn, x, args, has_aux)
  mean_loss = jnp.mean(losses)
  if idx is None:
    px, pargs, p_losses, p_vjp = x, args, losses, vjp_fn
  else:
    px, pargs = x[idx], _take(args, idx)
    p_losses, p_vjp, _ = _losses_and_vjp(loss_fn, px, pargs, has_aux)
  (g,) = p_vjp(jnp.ones_like(p_losses))
  if mode in ("exact", "forward_over_reverse"):  # the latter: a named axis outside shard_map
    penalty = variation_penalty(g, q=q, norm=norm, axis_name=axis_name)
    term = penalty
  else:
    penalty, term = _finite_difference_surrogate(
        loss_fn, px, pargs, p_losses, g, q=q, norm=norm, has_aux=has_aux, axis_name=axis_name,
        fd_step=fd_step)
  total = mean_loss + rho * term
  return total, WDROAux(mean_loss=mean_loss, penalty=jax.lax.stop_gradient(penalty),
                        losses=losses, fn_aux=fn_aux)


# ----------------------------------------------------------------------------------------------
# Other robust objectives over per-example losses.


def kl_dro_loss(losses: jax.Array, *, temperature: float | jax.Array) -> jax.Array:
  r"""KL-DRO objective (the dual of a KL-ball worst case at a fixed temperature).

  .. math::

    \tau \log \frac1B \sum_i e^{\ell_i / \tau}
    = \tau\,(\mathrm{logsumexp}(\ell / \tau) - \log B),

  computed stably with ``logsumexp``. Its gradient weights example ``i`` by
  :math:`\mathrm{softmax}(\ell/\tau)_i`. Large :math:`\tau` tends to the mean, small
  :math:`\tau` to the max.

  Args:
    losses: ``[B]`` float per-example losses.
    temperature: :math:`\tau > 0`.

  Returns:
    ``[]`` scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(kl_dro_loss(jnp.array([1.0, 1.0]), temperature=0.5)), 6)
    1.0
  """
  losses = _check_float("losses", losses, rank=1)
  _check_scalar_range("temperature", temperature, low=0.0, low_open=True, expected="> 0")
  t = jnp.asarray(temperature, losses.dtype)
  b = losses.shape[0]
  return t * (jax.nn.logsumexp(losses / t) - jnp.log(jnp.asarray(b, losses.dtype)))


def cvar_loss(losses: jax.Array, *, alpha: float) -> jax.Array:
  r"""Conditional value at risk: the mean of the largest ``k`` losses, ``k = ceil(alpha * B)``.

  Convention: ``k = max(1, ceil(alpha * B))`` with ``alpha * B`` first rounded to 6 decimals
  (so ``alpha = 0.3, B = 10`` gives ``k = 3``, not 4 from floating-point ``3.0000000000000004``).
  This is the empirical top-fraction average; it differs from the Rockafellar-Uryasev CVaR,
  which weights the boundary example fractionally, when ``alpha * B`` is not an integer.
  ``alpha = 1`` gives the mean. The gradient flows to the selected examples only (ties broken
  by ``lax.top_k``'s order).

  Args:
    losses: ``[B]`` float per-example losses.
    alpha: fraction in ``(0, 1]`` (static Python float: it fixes ``k``).

  Returns:
    ``[]`` scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> float(cvar_loss(jnp.array([1.0, 4.0, 2.0, 3.0]), alpha=0.5))
    3.5
  """
  losses = _check_float("losses", losses, rank=1)
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
    raise TypeError(f"alpha must be a Python float (static), got {type(alpha).__name__}.")
  if not 0.0 < float(alpha) <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}.")
  b = losses.shape[0]
  k = max(1, math.ceil(round(float(alpha) * b, 6)))
  top, _ = jax.lax.top_k(losses, k)
  return jnp.mean(top)


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
