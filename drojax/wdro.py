r"""The W-DRO variation penalty of DRO-Augment and the objective it defines.

The Wasserstein DRO objective of DRO-Augment (arXiv 2506.17874) is approximated by the mean loss
plus ``rho`` times the variation penalty of the input gradients,

.. math::

  \mathcal{L}(\theta) = \frac1B \sum_i \ell_i(\theta, x_i)
    + \rho \Big(\frac1B \sum_i \|\nabla_{x_i} \textstyle\sum_j \ell_j\|_*^q\Big)^{1/q},

whose parameter gradient is a gradient of a gradient (:func:`wdro_total`). Unlike the public
DRO-Augment code, where the penalty is a detached number, here it changes the parameter gradient.

Models meet this module as closures ``loss_fn(x, *args) -> [B]`` over their variables, so the
pure core never touches Flax state. Inputs ``x`` are images NHWC float32 in [0, 1] (or any
``[B, ...]`` float array). The gradient modes' plumbing (``custom_vjp``, ``shard_map``
bookkeeping) is private, in ``drojax._wdro_modes``. This module imports JAX only (no Flax,
Optax, Orbax or TFDS).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import math

import jax
import jax.numpy as jnp

from drojax import _wdro_modes as _modes
from drojax._checks import check_float as _check_float
from drojax._checks import check_hyper
from drojax._wdro_modes import NORM_SPELLING, norm_exponent

__all__ = ["DEFAULT_FD_STEP", "DEFAULT_Q", "PENALTY_MODES", "NORM_SPELLING", "WDROAux",
           "input_gradients", "norm_exponent", "variation_penalty", "wdro_total"]

PENALTY_MODES = ("exact", "forward_over_reverse", "finite_difference")

# The penalty exponent q everywhere (MethodConfig, variation_penalty, wdro_total): q = 1, the
# mean dual norm (DRO-Augment's recipe, shared/reference/recipes.md).
DEFAULT_Q = 1.0

# Relative step of the finite-difference penalty gradient: the input batch moves by
# DEFAULT_FD_STEP * ||x||_2 along a unit-norm direction; see ``wdro_total``.
DEFAULT_FD_STEP = 5e-3


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
  losses, vjp_fn, aux = _modes.losses_and_vjp(loss_fn, x, args, has_aux)
  (grads,) = vjp_fn(jnp.ones_like(losses))
  return (grads, aux) if has_aux else grads



def variation_penalty(grads: jax.Array, *, q: float = DEFAULT_Q, norm: str = "l2",
                      axis_name: Any = None) -> jax.Array:
  r"""DRO-Augment's variation regularizer of input gradients.

  .. math::

    P(g) = \Big(\frac1N \sum_{i=1}^N \|g_i\|_*^q\Big)^{1/q}
    \quad (q = \infty:\ \max_i \|g_i\|_*),

  where :math:`\|\cdot\|_*` is the dual of the ground-cost norm ``norm`` (``'l2'`` -> 2,
  ``'linf'`` -> 1, ``'l1'`` -> inf, ``'l<p>'`` -> p/(p-1)) over all non-batch axes of ``g_i``.
  The gradient is finite (zero contribution) where some :math:`g_i` is exactly zero, and where
  all are.

  Args:
    grads: ``[B, ...]`` float input gradients (:func:`input_gradients`).
    q: exponent in ``[1, inf]`` (static Python number), default ``DEFAULT_Q`` = 1.
    norm: ground-cost norm, ``'l1'``, ``'l2'``, ``'linf'`` or ``'l<p>'`` with ``p >= 1``
      (static; the attacks' spelling); the dual norm is applied.
    axis_name: inside ``shard_map``/``pmap``/named ``vmap``, the mapped axis the batch is split
      over: the mean (max for ``q = inf``) is then over the global batch, via ``psum`` of the
      local sums and counts (so N devices give the 1-device value). ``None``: the local batch.
      Tested under ``shard_map`` (``check_vma=True``), where ``jax.grad`` of the ``pmean`` of
      ``wdro_total``'s total matches one device; under a named ``vmap`` only values match (its
      ``psum`` transposes to a sum of cotangents).

  Returns:
    ``[]`` penalty in the dtype of ``grads``.

  Example:
    >>> import jax.numpy as jnp
    >>> g = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    >>> float(variation_penalty(g, q=1.0))  # mean of the 2-norms 5 and 0
    2.5
    >>> round(float(variation_penalty(g, q=2.0, norm="linf")), 4)  # sqrt(mean of 7**2, 0)
    4.9497
  """
  q, p = _modes.check_q_norm(q, norm)
  grads = _check_float("grads", grads, min_rank=1)
  return _modes.reduce_norms(_modes.dual_norms(grads, p), q, axis_name)



class WDROAux(NamedTuple):
  """Diagnostics of :func:`wdro_total`.

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



def wdro_total(key: jax.Array | None, loss_fn: Callable[..., Any], x: jax.Array, *args: Any,
               rho: float | jax.Array, q: float = DEFAULT_Q, norm: str = "l2",
               has_aux: bool = False, axis_name: Any = None,
               penalty_mode: str = "forward_over_reverse", fd_step: float = DEFAULT_FD_STEP,
               penalty_subsample: float = 1.0) -> tuple[jax.Array, WDROAux]:
  r"""DRO-Augment's W-DRO objective: mean loss plus ``rho`` times the variation penalty.

  .. math::

    \mathrm{total} = \frac1B \sum_i \ell_i(x) + \rho\, P\big(\nabla_x \textstyle\sum_j
      \ell_j(x)\big)

  with :math:`P` = ``variation_penalty``. ``jax.grad`` of ``total`` with respect to parameters
  closed over by ``loss_fn`` includes the penalty's gradient.

  Modes of the penalty's parameter gradient (``penalty_mode``; the value is the same in all three):

  * ``"exact"``: a gradient of a gradient. The losses and the input gradients come from one
    ``jax.vjp`` (a single forward pass), which ``jax.grad`` then differentiates.
  * ``"forward_over_reverse"`` (default): the same exact gradient, as the jvp of the gradient
    pass along
    :math:`v = \partial P / \partial g` (:math:`\nabla_\theta \langle v, \nabla_x L\rangle =
    \partial_\epsilon \nabla_\theta L(x + \epsilon v)`, ``jax.linearize``), and the backward
    that gives :math:`g` also gives the mean loss's gradient. About 10% cheaper than
    ``"exact"`` for PreActResNet-18 on CPU (``docs/benchmarks.md``); agrees with it to float32
    rounding (``tests/test_wdro.py`` compares the two).
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

  ``penalty_subsample = f < 1`` takes the penalty on ``m = max(1, round(f * B))`` examples
  drawn without replacement with ``key`` (``x`` and every ``*args`` indexed together, a
  separate call of ``loss_fn`` on them); the mean loss still uses the whole batch. The estimate
  is unbiased for ``q = 1`` when examples do not interact (no train-mode BatchNorm); for
  ``q > 1`` the :math:`(\cdot)^{1/q}` of a sample mean is biased low (Jensen), and for
  ``q = inf`` the sampled max is a lower bound. Composes with both modes.

  Args:
    key: PRNG key, required when ``penalty_subsample < 1`` (otherwise unused; ``None`` is
      accepted).
    loss_fn: ``loss_fn(x, *args) -> [B]`` per-example losses (``([B], aux)`` with
      ``has_aux``); a closure over the model's variables.
    x: ``[B, ...]`` float inputs (NHWC images in [0, 1]).
    *args: extra batched arguments of ``loss_fn`` (e.g. targets ``[B, K]``).
    rho: penalty weight ``>= 0`` (a float or a traced scalar).
    q: penalty exponent in ``[1, inf]`` (static), default ``DEFAULT_Q`` = 1 (as ``MethodConfig``).
    norm: ground-cost norm (static; see ``variation_penalty``); its dual is applied to gradients.
    has_aux: whether ``loss_fn`` returns ``(losses, aux)`` (static).
    axis_name: mapped axis for a global-batch penalty (see ``variation_penalty``); the mean loss
      in ``total`` stays LOCAL (the train step ``pmean``s the scalar).
    penalty_mode: one of ``PENALTY_MODES``: ``"exact"``, ``"forward_over_reverse"`` or
      ``"finite_difference"`` (static).
    fd_step: relative step ``> 0`` of the finite-difference mode (static); the input moves by
      ``fd_step * ||x||_2``.
    penalty_subsample: fraction ``f`` in ``(0, 1]`` of the batch the penalty is taken on (static).

  Returns:
    ``(total, WDROAux)`` with ``total`` a ``[]`` scalar.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -2.0])
    >>> loss_fn = lambda x: (x @ w) ** 2 / 2     # per-example gradient (x_i . w) w
    >>> total, aux = wdro_total(None, loss_fn, jnp.array([[1.0, 1.0]]), rho=0.5, q=1.0)
    >>> float(aux.mean_loss), round(float(aux.penalty), 4)   # |x.w| * |w| = sqrt(5)
    (0.5, 2.2361)
  """
  if penalty_mode not in PENALTY_MODES:
    raise ValueError(f"penalty_mode must be one of {PENALTY_MODES}, got {penalty_mode!r}.")
  mode, subsample = penalty_mode, penalty_subsample
  q, p = _modes.check_q_norm(q, norm)
  check_hyper("rho", rho, low=0.0, expected=">= 0 and finite")
  if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float)) or not (
      0 < fd_step < math.inf):
    raise ValueError(f"fd_step must be a positive Python float, got {fd_step!r}.")
  if isinstance(subsample, bool) or not isinstance(subsample, (int, float)) or not (
      0.0 < subsample <= 1.0):
    raise ValueError(f"penalty_subsample must be a Python float in (0, 1], got {subsample!r}.")
  x = _check_float("x", x, min_rank=1)
  b = x.shape[0]
  _modes.check_batched_args(args, b)
  if subsample < 1.0 and key is None:
    raise ValueError(f"key is required when penalty_subsample < 1 (got {subsample}): pass a "
                     f"PRNG key, e.g. jax.random.key(0).")

  m = max(1, int(round(subsample * b)))
  idx = jax.random.permutation(key, b)[:m] if subsample < 1.0 else None
  if mode != "exact" and (_modes.axis_size(axis_name) == 1 or axis_name in _modes.varying_axes(x)):
    total, penalty, losses, fn_aux = _modes.shared_backward_wdro(
        loss_fn, x, tuple(args), rho=rho, q=q, p=p, has_aux=has_aux, axis_name=axis_name,
        mode=mode, fd_step=float(fd_step), idx=idx)
    return total, WDROAux(mean_loss=jnp.mean(losses), penalty=jax.lax.stop_gradient(penalty),
                          losses=losses, fn_aux=fn_aux)

  losses, vjp_fn, fn_aux = _modes.losses_and_vjp(loss_fn, x, args, has_aux)
  mean_loss = jnp.mean(losses)
  if idx is None:
    px, pargs, p_losses, p_vjp = x, args, losses, vjp_fn
  else:
    px, pargs = x[idx], _modes.take(args, idx)
    p_losses, p_vjp, _ = _modes.losses_and_vjp(loss_fn, px, pargs, has_aux)
  (g,) = p_vjp(jnp.ones_like(p_losses))
  if mode in ("exact", "forward_over_reverse"):  # the latter: a named axis outside shard_map
    penalty = variation_penalty(g, q=q, norm=norm, axis_name=axis_name)
    term = penalty
  else:
    penalty, term = _modes.finite_difference_surrogate(
        loss_fn, px, pargs, p_losses, g, q=q, p=p, has_aux=has_aux, axis_name=axis_name,
        fd_step=fd_step)
  total = mean_loss + rho * term
  return total, WDROAux(mean_loss=mean_loss, penalty=jax.lax.stop_gradient(penalty),
                        losses=losses, fn_aux=fn_aux)
