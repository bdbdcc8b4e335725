"""Input checks shared by the pure core (imports JAX only).

Shapes and dtypes are checked at trace time; values only when they are concrete (outside jit).
"""

import functools
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


def _readable(x: Any) -> bool:
  """True when ``x``'s values can be read here: concrete, non-empty, fully addressable."""
  if not is_concrete(x) or getattr(x, "size", 1) == 0:
    return False
  return not (isinstance(x, jax.Array) and not x.is_fully_addressable)


def _host(x: Any) -> np.ndarray:
  # A concrete array closed over inside a jit trace is read outside the trace.
  with jax.ensure_compile_time_eval():
    return np.asarray(jax.device_get(x))


def check_finite(name: str, x: Any) -> None:
  """Raises ValueError when the concrete array ``x`` holds a NaN or an infinity.

  Counted with ``isfinite`` on the host (a min/max reduction can skip a NaN). Skipped, like
  :func:`check_unit_range`, for tracers, empty and not fully addressable arrays.

  Example:
    >>> import jax.numpy as jnp
    >>> check_finite("losses", jnp.array([0.5, jnp.inf]))
    Traceback (most recent call last):
    ...
    ValueError: losses must be finite; it holds 1 NaN or infinite value(s) (first at index (1,)).
  """
  if not _readable(x):
    return
  v = _host(x)
  if np.issubdtype(v.dtype, np.inexact):
    bad = ~np.isfinite(v)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name} must be finite; it holds {int(bad.sum())} NaN or infinite "
                       f"value(s) (first at index {first}).")


def check_nonnegative(name: str, x: Any) -> None:
  """Raises ValueError unless every value of the concrete array ``x`` is >= 0 (NaN fails).

  Example:
    >>> import jax.numpy as jnp
    >>> check_nonnegative("variances", jnp.array([0.0, -0.5]))
    Traceback (most recent call last):
    ...
    ValueError: variances must be >= 0 (and not NaN); got 1 bad value(s), e.g. -0.5.
  """
  if not _readable(x):
    return
  v = _host(x)
  bad = ~(v >= 0)  # NaN compares False
  if bad.any():
    raise ValueError(f"{name} must be >= 0 (and not NaN); got {int(bad.sum())} bad value(s), "
                     f"e.g. {v[bad].ravel()[0]:.6g}.")


def check_int_range(name: str, x: Any, low: int, high: int, *, fix: str = "") -> None:
  """Raises ValueError unless every value of the concrete integer array ``x`` is in
  ``[low, high)``: checked arithmetically, never by enumerating the range.

  Example:
    >>> import jax.numpy as jnp
    >>> check_int_range("partner", jnp.array([1, 2]), 0, 2)
    Traceback (most recent call last):
    ...
    ValueError: partner must lie in [0, 2); got 1 value(s) outside, e.g. 2.
  """
  if not _readable(x):
    return
  v = _host(x)
  bad = (v < low) | (v >= high)
  if bad.any():
    raise ValueError(f"{name} must lie in [{low}, {high}); got {int(bad.sum())} value(s) "
                     f"outside, e.g. {v[bad].ravel()[0]}.{' ' + fix if fix else ''}")


def check_labels(name: str, labels: Any, num_classes: int) -> None:
  """Raises ValueError unless the concrete integer ``labels`` lie in ``[0, num_classes)``.

  Under ``jit`` (traced labels) nothing is checked: the caller must turn an out-of-range label
  into NaN, never into a finite number.

  Example:
    >>> import jax.numpy as jnp
    >>> check_labels("y", jnp.array([0, 10]), 10)
    Traceback (most recent call last):
    ...
    ValueError: y (class ids for 10 classes) must lie in [0, 10); got 1 value(s) outside, ...
  """
  check_int_range(f"{name} (class ids for {num_classes} classes)", labels, 0, num_classes,
                  fix="Map the labels to 0..K-1, or give the model K outputs.")


def distribution_tolerance(dtype: Any) -> float:
  """How far a row of probabilities in ``dtype`` may sum from 1 (rounding, not mistakes)."""
  return max(1e-3, 16 * float(jnp.finfo(dtype).eps))


def check_distribution(name: str, p: Any) -> None:
  """Raises ValueError unless every row (last axis) of the concrete ``p`` is a distribution.

  Non-negative, finite, summing to 1 within :func:`distribution_tolerance`.

  Example:
    >>> import jax.numpy as jnp
    >>> check_distribution("labels", jnp.array([[0.5, 0.5], [1.5, -0.5]]))
    Traceback (most recent call last):
    ...
    ValueError: labels must hold probability rows (>= 0, summing to 1); row 1 is [1.5, -0.5] ...
  """
  if not _readable(p):
    return
  v = _host(p).astype(np.float64)
  tol = distribution_tolerance(_host(p).dtype)
  rows = v.reshape(-1, v.shape[-1])
  bad = ~(np.all(rows >= 0, axis=-1) & (np.abs(rows.sum(-1) - 1.0) <= tol))
  if bad.any():
    i = int(np.argmax(bad))
    shown = [float(f"{u:.6g}") for u in rows[i][:6]]
    raise ValueError(f"{name} must hold probability rows (>= 0, summing to 1); row {i} is "
                     f"{shown}{'...' if rows.shape[1] > 6 else ''} (sum {rows[i].sum():.6g}). "
                     "Pass integer class ids, or normalize the rows.")


def check_hyper(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False, expected: str,
                allow_inf: bool = False) -> float:
  """A hyper-parameter: a real scalar, finite (unless ``allow_inf``) and in the given range.

  For factories and options fixed before any compute; a traced value is returned unchecked.

  Example:
    >>> check_hyper("rho", float("nan"), low=0.0, expected=">= 0 and finite")
    Traceback (most recent call last):
    ...
    ValueError: rho must be >= 0 and finite; got nan.
  """
  if not is_concrete(value):
    return value
  if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
    raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).")
  try:
    v = np.asarray(value)
    if v.ndim != 0:
      raise ValueError(f"{name} must be a scalar ({expected}); got shape {v.shape}.")
    v = float(v)
  except (TypeError, ValueError) as e:
    if isinstance(e, ValueError) and "scalar" in str(e):
      raise
    raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).") from None
  bad = (math.isnan(v) or (math.isinf(v) and not allow_inf)
         or (v <= low if low_open else v < low) or (v >= high if high_open else v > high))
  if bad:
    raise ValueError(f"{name} must be {expected}; got {value!r}.")
  return value


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



def check_static_int(name: str, value: Any, *, minimum: int) -> int:
  """A Python or NumPy integer ``>= minimum`` as an ``int``, else a ValueError naming it.

  For arguments that fix a shape or a loop length (static under ``jit``): ``bool`` and floats
  such as ``3.0`` are refused, ``np.int64(3)`` is accepted, as everywhere in the library.

  Args:
    name: the argument's name as the user wrote it, e.g. ``"num_steps"``.
    value: the value received.
    minimum: the smallest allowed value.

  Returns:
    ``int(value)``.

  Example:
    >>> check_static_int("num_steps", np.int64(3), minimum=1)
    3
    >>> check_static_int("num_steps", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: num_steps must be an int >= 1; got 0.
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
  return int(value)


def to_unit_float(name: str, images: Any) -> Any:
  """uint8 images in 0..255 -> float32 in [0, 1]; floating images -> float32 unchanged.

  A NumPy array stays a NumPy array (host-side batching), anything else becomes a JAX array.
  Any other dtype is a TypeError naming the argument.

  Args:
    name: the argument's name, e.g. ``"batch['image']"``.
    images: ``[..., H, W, C]`` uint8 or floating.

  Returns:
    float32 images of the same shape.

  Example:
    >>> to_unit_float("images", np.array([0, 51, 255], np.uint8)).tolist()
    [0.0, 0.20000000298023224, 1.0]
  """
  xp = np if isinstance(images, np.ndarray) else jnp
  images = xp.asarray(images)
  if images.dtype == xp.uint8:
    return images.astype(xp.float32) / xp.float32(255.0)
  if not xp.issubdtype(images.dtype, xp.floating):
    raise TypeError(f"{name} must be uint8 (0..255) or float in [0, 1]; got dtype "
                    f"{images.dtype}.")
  return images if images.dtype == xp.float32 else images.astype(xp.float32)


def renamed(**old_to_new: str):
  """Decorator: a call that uses an old keyword gets a TypeError naming the new one.

  No silent alias: the old spelling is refused, never forwarded.

  Args:
    **old_to_new: ``old_name="new_name"`` pairs.

  Returns:
    The decorator.

  Example:
    >>> @renamed(steps="num_steps")
    ... def f(*, num_steps):
    ...   return num_steps
    >>> f(steps=3)
    Traceback (most recent call last):
    ...
    TypeError: f() takes num_steps= (renamed from steps=); got steps=3.
  """
  def decorate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      for old, new in old_to_new.items():
        if old in kwargs:
          raise TypeError(f"{fn.__name__}() takes {new}= (renamed from {old}=); got "
                          f"{old}={kwargs[old]!r}.")
      return fn(*args, **kwargs)
    return wrapper
  return decorate
