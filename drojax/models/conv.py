"""A convolution whose input gradient stays on XLA:CPU's fast path inside ``lax`` loops.

Attacks (PGD, APGD, Square's sibling attacks in the suite) differentiate the model with respect
to its *input* inside ``lax.fori_loop`` / ``lax.while_loop``. There, XLA:CPU (jax 0.10 to 0.12)
emits the input gradient of a convolution with the kernel's feature axes swapped
(``dim_labels=..._01oi->...``), which misses its Eigen convolution and runs 4-10x slower than
the same gradient outside a loop, where XLA materializes the transposed kernel first.
:func:`conv_general_dilated` is ``lax.conv_general_dilated`` with a JVP rule that writes the
input tangent with a physically transposed kernel, so that its transpose, the input gradient,
gets the fast layout in loops too. The result, every derivative (reverse, forward, nested)
and ``vmap`` are those of ``lax.conv_general_dilated``: the same convolutions, arranged
differently (``tests/test_models_conv.py``).

Use it in any Flax model: ``nn.Conv(..., conv_general_dilated=conv_general_dilated)``; drojax's
models do when built with ``fast_input_grad=True`` (the evaluator does so for its attacks).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """``lax.conv_general_dilated`` (same arguments, same result) with a loop-friendly input
  gradient; see the module docstring.

  Args:
    lhs: input, e.g. ``[B, H, W, C]`` with ``dimension_numbers=("NHWC", "HWIO", "NHWC")``.
    rhs: kernel, e.g. ``[kh, kw, C / feature_group_count, O]``.
    window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
    feature_group_count, batch_group_count, precision, preferred_element_type: as in
      ``lax.conv_general_dilated``.

  Returns:
    The convolution, e.g. ``[B, H', W', O]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x, k = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 5))
    >>> dn = ("NHWC", "HWIO", "NHWC")
    >>> y = conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
    >>> bool(jnp.all(y == jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
    ...                                                 dimension_numbers=dn)))
    True
  """
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  out_axis, in_axis = dn.rhs_spec[0], dn.rhs_spec[1]
  # The same kernel with its two feature axes physically exchanged, described by exchanged labels.
  swapped_dn = lax.ConvDimensionNumbers(dn.lhs_spec, (in_axis, out_axis) + tuple(dn.rhs_spec[2:]),
                                        dn.out_spec)
  options = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                 rhs_dilation=rhs_dilation, feature_group_count=feature_group_count,
                 batch_group_count=batch_group_count, precision=precision,
                 preferred_element_type=preferred_element_type)

  def plain(x, k):
    return lax.conv_general_dilated(x, k, dimension_numbers=dn, **options)

  @jax.custom_jvp
  def conv(x, k):
    return plain(x, k)

  def conv_jvp(primals, tangents):
    x, k = primals
    dx, dk = tangents
    out = conv(x, k)
    tangent = None
    if not isinstance(dx, SymbolicZero):
      tangent = lax.conv_general_dilated(dx, k.swapaxes(out_axis, in_axis),
                                         dimension_numbers=swapped_dn, **options)
    if not isinstance(dk, SymbolicZero):
      kernel_term = plain(x, dk)
      tangent = kernel_term if tangent is None else tangent + kernel_term
    if tangent is None:
      tangent = jnp.zeros_like(out)
    return out, tangent

  conv.defjvp(conv_jvp, symbolic_zeros=True)
  return conv(lhs, rhs)


def conv_impl(fast_input_grad: bool):
  """The ``conv_general_dilated`` argument for ``flax.linen.Conv``.

  Args:
    fast_input_grad: whether to use this module's :func:`conv_general_dilated`.

  Returns:
    :func:`conv_general_dilated`, or ``None`` (Flax's default, ``lax.conv_general_dilated``).

  Example:
    >>> conv_impl(False) is None, conv_impl(True) is conv_general_dilated
    (True, True)
  """
  return conv_general_dilated if fast_input_grad else None
