"""Mixup (Zhang et al., 2018): convex combinations of example pairs and of their targets.

Images are NHWC float32 in [0, 1] inside the library; targets are ``[B, K]`` probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drojax._checks import check_distribution, check_hyper, check_int_range, check_unit_range
from drojax.augment import _random


def _check_pair(x: jax.Array, y: jax.Array) -> None:
  if x.ndim < 1:
    raise ValueError(f"x must have a batch axis; received shape {tuple(x.shape)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating point; received dtype {x.dtype}.")
  if y.ndim != 2 or not jnp.issubdtype(y.dtype, jnp.floating):
    raise TypeError(
        f"y must be [B, K] float soft targets; received shape {tuple(y.shape)}, dtype "
        f"{y.dtype}. Convert integer labels with jax.nn.one_hot(labels, num_classes).")
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"x and y must have the same batch size; received {x.shape[0]} and {y.shape[0]}.")
  check_distribution("y", y)


def mixup_with_lambda(x: jax.Array, y: jax.Array, lam: jax.Array,
                      partner: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Deterministic mixup: ``x'_i = lam_i x_i + (1 - lam_i) x_{partner_i}``, same for ``y``.

  Args:
    x: ``[B, ...]`` float inputs.
    y: ``[B, K]`` float soft targets (rows sum to 1).
    lam: ``[]`` (one weight for the batch) or ``[B]`` (per example) float in [0, 1].
    partner: ``[B]`` int32, the example each row is mixed with (a permutation in mixup).

  Returns:
    ``(x_mixed [B, ...], y_mixed [B, K])`` in the dtypes of ``x`` and ``y``. Rows of
    ``y_mixed`` still sum to 1 (a convex combination of distributions).

  Example:
    >>> x = jnp.array([[0.0], [1.0]]); y = jnp.eye(2)
    >>> xm, ym = mixup_with_lambda(x, y, jnp.float32(0.25), jnp.array([1, 0]))
    >>> xm[:, 0].tolist(), ym[0].tolist()
    ([0.75, 0.25], [0.25, 0.75])
  """
  _check_pair(x, y)
  lam = jnp.asarray(lam)
  b = x.shape[0]
  if lam.shape not in ((), (b,)):
    raise ValueError(f"lam must be a scalar or [B] = ({b},); received {tuple(lam.shape)}.")
  if partner.shape != (b,):
    raise ValueError(f"partner must be [B] = ({b},); received {tuple(partner.shape)}.")
  check_unit_range("lam", lam)
  check_int_range("partner", partner, 0, b)
  lx = lam.astype(x.dtype).reshape(lam.shape + (1,) * (x.ndim - lam.ndim))
  ly = lam.astype(y.dtype).reshape(lam.shape + (1,) * (y.ndim - lam.ndim))
  x_mixed = lx * x + (1.0 - lx) * x[partner]
  y_mixed = ly * y + (1.0 - ly) * y[partner]
  return x_mixed, y_mixed


def sample_mixup_params(key: jax.Array, batch_size: int, *, alpha: float,
                        per_example: bool = False) -> tuple[jax.Array, jax.Array]:
  """Draws mixup's ``lam ~ Beta(alpha, alpha)`` and a uniformly random partner permutation.

  Args:
    key: PRNG key.
    batch_size: static int ``B``.
    alpha: Beta concentration (> 0); ``alpha`` of 1 draws ``lam`` uniformly.
    per_example: static bool. False (default, as facebookresearch/mixup-cifar10): one ``lam``
      for the whole batch, shape ``[]``. True: one ``lam`` per example, shape ``[B]``.

  Returns:
    ``(lam, partner)`` with ``partner`` a ``[B]`` int32 permutation.
  """
  check_hyper("alpha", alpha, low=0.0, low_open=True, expected="> 0 and finite")
  k_lam, k_perm = jax.random.split(key)
  shape = (batch_size,) if per_example else ()
  lam = _random.beta(k_lam, alpha, alpha, shape)
  partner = jax.random.permutation(k_perm, batch_size).astype(jnp.int32)
  return lam, partner


def mixup(key: jax.Array, x: jax.Array, y: jax.Array, *, alpha: float = 1.0,
          per_example: bool = False) -> tuple[jax.Array, jax.Array]:
  """Mixup: mixes each example with a random partner and returns soft targets.

  ``lam ~ Beta(alpha, alpha)``, ``partner`` a uniform random permutation;
  ``x'_i = lam x_i + (1 - lam) x_{partner_i}``, ``y'_i = lam y_i + (1 - lam) y_{partner_i}``.
  Cross-entropy against ``y'`` equals the reference's
  ``lam * CE(y_a) + (1 - lam) * CE(y_b)`` because cross-entropy is linear in the target.

  Args:
    key: PRNG key.
    x: ``[B, ...]`` float inputs (images NHWC in [0, 1]; mixing keeps them in [0, 1]).
    y: ``[B, K]`` float soft targets (one-hot or smoothed).
    alpha: Beta concentration (> 0), 1.0 in the reference.
    per_example: static bool; False (default) draws one ``lam`` per batch like the reference,
      True draws one per example.

  Returns:
    ``(x_mixed, y_mixed)`` with the shapes and dtypes of ``x`` and ``y``.

  Example:
    >>> x = jnp.zeros((4, 8, 8, 3)); y = jax.nn.one_hot(jnp.arange(4), 10)
    >>> xm, ym = mixup(jax.random.key(0), x, y, alpha=1.0)
    >>> xm.shape, ym.shape
    ((4, 8, 8, 3), (4, 10))
  """
  _check_pair(x, y)
  lam, partner = sample_mixup_params(key, x.shape[0], alpha=alpha, per_example=per_example)
  return mixup_with_lambda(x, y, lam, partner)
