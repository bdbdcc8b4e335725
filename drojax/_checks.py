"""Input checks shared by the pure core (imports JAX only).

Shapes and dtypes are checked at trace time; values only when they are concrete (outside jit).
"""

from typing import Any

import jax
import jax.numpy as jnp


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
