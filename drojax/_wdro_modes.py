"""Private plumbing of :mod:`drojax.wdro`: dual norms, the penalty's reduction over a mesh axis,
and the ``custom_vjp`` that shares one backward pass between the mean loss and the penalty's
input gradient (``forward_over_reverse``, ``finite_difference``), with its ``shard_map``
bookkeeping. Nothing here is public API; :mod:`drojax.wdro` documents the behaviour.

Imports JAX only.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_float as _check_float


def check_batched_args(args: Sequence[Any], batch: int) -> None:
  for i, a in enumerate(args):
    for leaf in jax.tree_util.tree_leaves(a):
      shape = jnp.shape(leaf)
      if not shape or shape[0] != batch:
        raise ValueError(f"args[{i}] must be batched along axis 0 like x (batch {batch}), got "
                         f"a leaf of shape {shape}.")


def check_losses_out(losses: Any, batch: int) -> jax.Array:
  shape = jnp.shape(losses)
  if shape != (batch,):
    raise ValueError(f"loss_fn must return per-example losses of shape [B]=({batch},), got "
                     f"shape {shape}; do not reduce the batch inside loss_fn.")
  return losses



def losses_and_vjp(loss_fn, x, args, has_aux):
  x = _check_float("x", x, min_rank=1)
  check_batched_args(args, x.shape[0])

  def f(x_):
    return loss_fn(x_, *args)

  if has_aux:
    losses, vjp_fn, aux = jax.vjp(f, x, has_aux=True)
  else:
    (losses, vjp_fn), aux = jax.vjp(f, x), None
  check_losses_out(losses, x.shape[0])
  return losses, vjp_fn, aux



def _dual_exponent(p: float) -> float:
  if p == 1:
    return math.inf
  if math.isinf(p):
    return 1.0
  return p / (p - 1.0)


def _safe_pow(x: jax.Array, p: float) -> jax.Array:
  """``x ** p`` for ``x >= 0`` with a finite (zero) gradient at ``x == 0`` even when ``p < 1``."""
  pos = x > 0
  return jnp.where(pos, jnp.where(pos, x, 1.0) ** p, 0.0)


def _abs(x: jax.Array) -> jax.Array:
  """``|x|`` whose gradient at exactly 0 is 0 (the minimal-norm subgradient)."""
  return jnp.where(x != 0, jnp.abs(x), 0.0)


def dual_norms(grads: jax.Array, p: float) -> jax.Array:
  """``[B]`` dual norms over all non-batch axes, with finite gradients at zero."""
  flat = grads.reshape(grads.shape[0], -1)
  r = _dual_exponent(p)
  if math.isinf(r):
    return jnp.max(_abs(flat), axis=1)
  if r == 1.0:
    return jnp.sum(_abs(flat), axis=1)
  if r == 2.0:
    return _safe_pow(jnp.sum(flat * flat, axis=1), 0.5)
  return _safe_pow(jnp.sum(_safe_pow(_abs(flat), r), axis=1), 1.0 / r)


def reduce_norms(norms: jax.Array, q: float, axis_name: Any) -> jax.Array:
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


NORM_SPELLING = "'l1', 'l2', 'linf' or 'l<p>' with p >= 1 (e.g. 'l3')"


def norm_exponent(norm: Any) -> float:
  """The exponent ``p`` of a ground-cost norm spelled as the attacks spell it.

  Args:
    norm: ``'l1'``, ``'l2'``, ``'linf'`` or ``'l<p>'`` with ``p >= 1`` (``'l3'``, ``'l1.5'``).
      The float ``p`` of earlier releases (``2.0``) is refused with its new spelling.

  Returns:
    ``p`` as a float (``inf`` for ``'linf'``).

  Raises:
    TypeError: ``norm`` is a number (the old spelling) or not a string.
    ValueError: another string.

  Example:
    >>> norm_exponent("l2"), norm_exponent("linf")
    (2.0, inf)
  """
  try:  # the float p of earlier releases (also as text, from a command line)
    p = float(norm) if not isinstance(norm, bool) else None
  except (TypeError, ValueError):
    p = None
  if p is not None and p >= 1:
    new = "linf" if math.isinf(p) else f"l{p:g}"
    raise TypeError(f"norm takes a string now ({NORM_SPELLING}): write norm={new!r}, not the "
                    f"float p {norm!r}.")
  if not isinstance(norm, str):
    raise TypeError(f"norm must be {NORM_SPELLING}, got {norm!r} ({type(norm).__name__}).")
  match = re.fullmatch(r"l(inf|\d+(\.\d+)?)", norm)
  p = float(match.group(1)) if match else math.nan
  if not p >= 1:
    raise ValueError(f"norm must be {NORM_SPELLING}, got {norm!r}.")
  return p


def check_q_norm(q: Any, norm: Any) -> tuple[float, float]:
  """``(q, p)`` as floats: ``q`` a static number in ``[1, inf]``, ``p`` from ``norm_exponent``."""
  if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
    raise TypeError(f"q must be a Python number (static), got {type(q).__name__}.")
  if math.isnan(float(q)) or float(q) < 1:
    raise ValueError(f"q must be in [1, inf], got {q}.")
  return float(q), norm_exponent(norm)


def penalty_and_direction(g: jax.Array, q: float, p: float, axis_name: Any):
  """Penalty value and ``v = dP/dg`` for the local ``g`` (no collective is differentiated)."""

  def local_penalty(g_):
    norms = dual_norms(g_, p)
    if axis_name is None:
      return reduce_norms(norms, q, None)
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


def take(tree: Any, idx: jax.Array) -> Any:
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


def varying_axes(a: Any) -> frozenset:
  """The mesh axes ``a`` varies over inside ``shard_map`` (empty outside)."""
  manual = getattr(jax.typeof(a), "manual_axis_type", None)
  return frozenset(getattr(manual, "varying", ()))


def _vary_like(tree: Any, axis_name: Any, like: jax.Array) -> Any:
  """Marks leaves as varying over ``axis_name`` where ``like`` is (inside ``shard_map``)."""
  if axis_name not in varying_axes(like):
    return tree

  def one(a):
    return a if axis_name in varying_axes(a) else jax.lax.pcast(a, axis_name, to="varying")

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
    extra = tuple(sorted(varying_axes(ct) - vma))
    return jax.lax.psum(ct, extra) if extra else ct

  return tuple(
      None if ct is None else jax.tree_util.tree_map(one, ct, vma)
      for ct, vma in zip(cotangents, in_vma))


def _is_symbolic_zero(tree: Any) -> bool:
  leaves = jax.tree_util.tree_leaves(
      tree, is_leaf=lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero))
  return all(isinstance(t, jax.custom_derivatives.SymbolicZero) for t in leaves)


def finite_difference_surrogate(loss_fn, px, pargs, p_losses, g, *, q, p, has_aux,
                                 axis_name, fd_step):
  """``(penalty, term)``: a term whose value is the penalty and whose gradient is its estimate.

  ``sg(P) + s (L(x_p + h u) - L(x_p)) - sg(.)`` with ``s = ||v|| / h``: one extra forward and
  backward at ``x_p + h u``, on top of the backward that gave ``g`` (the general form, used
  where ``shared_backward_wdro`` does not apply: a named axis of size > 1 outside
  ``shard_map``, e.g. ``pmap`` or a named ``vmap``). ``u`` and ``h`` are per device there.
  """
  g = jax.lax.stop_gradient(g)
  penalty, v = penalty_and_direction(g, q, p, axis_name)
  v_norm = jnp.sqrt(jnp.sum(v * v))
  u = v / jnp.where(v_norm > 0, v_norm, 1.0)
  u = jax.lax.stop_gradient(u.astype(px.dtype))
  h = fd_step * jnp.sqrt(jnp.sum(jax.lax.stop_gradient(px).astype(jnp.float32) ** 2))
  h = jnp.where(h > 0, h, fd_step)  # an all-zero batch: fall back to an absolute step
  out = loss_fn(px + (h * u).astype(px.dtype), *pargs)
  p_losses_h = out[0] if has_aux else out
  check_losses_out(p_losses_h, px.shape[0])
  scale = jax.lax.stop_gradient(v_norm / h)
  if axis_name is not None:
    scale = scale * jax.lax.psum(1, axis_name)
  diff = scale * (jnp.sum(p_losses_h) - jnp.sum(p_losses))
  return penalty, jax.lax.stop_gradient(penalty) + diff - jax.lax.stop_gradient(diff)


def axis_size(axis_name: Any) -> int:
  return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


def shared_backward_wdro(loss_fn, x, args, *, rho, q, p, has_aux, axis_name, mode, fd_step,
                          idx):
  """``wdro.wdro_total`` as one ``custom_vjp``: ``(total, penalty, losses, fn_aux)``.

  The forward pass computes the whole gradient, so that the one backward at ``x`` that gives
  the mean loss's gradient also gives the input gradient ``g`` the penalty needs (autodiff of
  ``wdro_total``'s other forms runs a separate backward for ``g``). The penalty's gradient
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
  num_shards = axis_size(axis_name)

  def call(xx, aa):
    out = loss_fn(xx, *aa)
    return out if has_aux else (out, None)

  full_fn, full_consts = jax.closure_convert(call, x, args)
  if idx is None:
    sub_fn, sub_consts = full_fn, ()
  else:
    sub_fn, sub_consts = jax.closure_convert(call, x[idx], take(args, idx))

  def losses_of(fn, consts, xx, aa):
    losses, fn_aux = fn(xx, aa, *consts)
    check_losses_out(losses, xx.shape[0])
    return losses, fn_aux

  def grads_of(fn, consts, xx, aa):
    """The gradient of the summed loss w.r.t. ``(consts, xx, aa)``; aux ``(losses, fn_aux)``."""
    losses, vjp_fn, fn_aux = jax.vjp(lambda c, xx_, aa_: losses_of(fn, c, xx_, aa_), consts,
                                     xx, aa, has_aux=True)
    return vjp_fn(jnp.ones_like(losses)), (losses, fn_aux)

  def penalty_inputs(xx, aa):
    return (xx, aa) if idx is None else (xx[idx], take(aa, idx))

  def primal(full_consts, sub_consts, x, args, rho):
    (_, g, _), (losses, fn_aux) = grads_of(full_fn, full_consts, x, args)
    if idx is not None:
      (_, g, _), _ = grads_of(sub_fn, sub_consts, *penalty_inputs(x, args))
    penalty = reduce_norms(dual_norms(g, p), q, axis_name)
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
    penalty, v = penalty_and_direction(p_grads[1], q, p, axis_name)
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
          f"wdro_total(penalty_mode={mode!r}): loss_fn's aux (fn_aux) carries no gradient in this "
          f"mode; differentiate the total (or mean_loss, losses), or use penalty_mode='exact'.")
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
    if num_shards > 1:
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
  in_vma = jax.tree_util.tree_map(varying_axes, (full_consts, sub_consts, x, args, rho))
  total_fn = jax.custom_vjp(primal)
  total_fn.defvjp(fwd, bwd, symbolic_zeros=True)
  return total_fn(full_consts, sub_consts, x, args, rho)

