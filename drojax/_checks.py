"""Input checks shared by the pure core (imports JAX only).

Shapes and dtypes are checked at trace time; values only when they are concrete (outside jit).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` is not a tracer, so its value can be read on the host."""
  return not isinstance(x, jax.core.Tracer)


def check_float(name: str, x: Any, *, rank: int | None = None,
                min_rank: int | None = None) -> jax.Array:
  """``x`` as a floating-point array of the given rank, else a TypeError/ValueError naming it."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}; cast it with "
                    f".astype(jnp.float32).")
  if rank is not None and x.ndim != rank:
    raise ValueError(f"{name} must have rank {rank}, got shape {x.shape} (rank {x.ndim}).")
  if min_rank is not None and x.ndim < min_rank:
    raise ValueError(f"{name} must have rank >= {min_rank} (batch first), got shape {x.shape}.")
  return x


def check_unit_range(name: str, x: Any) -> None:
  """Raises ValueError unless the concrete image array ``x`` lies in [0, 1] (NaN fails too).

  Images inside the library are float in [0, 1]; an image in 0..255 passed by mistake would
  otherwise be clipped to [0, 1] (attacks, corruptions) or quantized (AugMix) into garbage
  without a word. The check counts NaNs with ``isnan`` (a min/max reduction can skip them) and
  reads the minimum and maximum of the rest, computed where ``x`` lives.

  Skipped silently, by design, when the value cannot be read: under ``jit``/``vmap``/``grad``
  (``x`` is a tracer; the check then happened, or should happen, at the caller's concrete
  boundary), for an array not fully addressable by this process (multi-host global arrays),
  and for empty arrays. Call it after the dtype check: integer arrays are the caller's error.

  Args:
    name: the argument's name as the user wrote it, e.g. ``"x"`` or ``"images"``.
    x: the array (any shape).

  Example:
    >>> import jax.numpy as jnp
    >>> check_unit_range("images", jnp.array([0.0, 0.5, 1.0]))
    >>> check_unit_range("images", jnp.array([0.0, 255.0]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: images must lie in [0, 1]; got values in [0, 255]. Divide 0..255 images by 255...
  """
  if not is_concrete(x) or getattr(x, "size", 1) == 0:
    return
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return
  # A concrete array closed over inside a jit trace would otherwise give traced reductions.
  # NaN is counted with isnan: XLA:CPU's vectorized min/max can drop a NaN from large arrays.
  with jax.ensure_compile_time_eval():
    nans = jnp.isnan(x)
    stats = (jnp.sum(nans), jnp.min(jnp.where(nans, jnp.inf, x)),
             jnp.max(jnp.where(nans, -jnp.inf, x)))
    n_nan, lo, hi = (v.item() for v in jax.device_get(stats))
  if n_nan:
    raise ValueError(f"{name} must lie in [0, 1] and be finite; it contains {n_nan} NaN "
                     "value(s). Find where they come from (a division by zero, a corrupt file).")
  if lo < 0.0 or hi > 1.0:
    raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:.6g}, {hi:.6g}]. Divide "
                     "0..255 images by 255 (x.astype(jnp.float32) / 255).")


def check_scalar_range(name: str, value: Any, *, low: float, high: float = math.inf,
                        low_open: bool = False, expected: str) -> None:
  """A concrete scalar in the given range, else a ValueError naming it (traced: unchecked)."""
  if not is_concrete(value):
    return
  v = np.asarray(value)
  if v.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {v.shape}.")
  v = float(v)
  bad = math.isnan(v) or v > high or (v <= low if low_open else v < low)
  if bad:
    raise ValueError(f"{name} must be {expected}, got {value}.")

