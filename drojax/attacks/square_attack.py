"""The Square attack (Andriushchenko et al., ECCV 2020), L-inf: score-based, no gradients.

Random search over perturbations at the corners of the L-inf ball:

* start: vertical stripes, ``x + eps * s`` with one sign ``s in {-1, +1}`` per column and
  channel, clipped to [0, 1];
* each query draws, per example, a square window of side ``h_i = round(sqrt(p_i H W))``
  (at least 1, at most ``H - 1``) at a uniform position and one sign per channel, sets the
  window to ``clip(x + eps * sign)`` and keeps the candidate if it lowers the margin
  ``z_y - max_{j != y} z_j``;
* ``p_i`` halves on the schedule of the reference code, rescaled to ``num_queries``: with
  ``t = floor(10000 i / num_queries)``, ``p = p_init / 2^m`` where ``m`` counts the
  thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 below ``t``.

An example stops being updated once its margin is <= 0 (fooled); the query loop is a
``lax.while_loop`` that ends when every attacked example is fooled or the budget is spent,
so it jits and a second batch of the same shape reuses the compiled program. ``num_queries``
counts model evaluations per example, the start included.

Differences from the reference code (read for understanding only): windows and signs are
drawn per example rather than one window per query for the whole batch; a window may start
at any row/column where it fits (the reference draws the corner from ``[0, H - s)``, so a
1-pixel window never touches the last row or column); a candidate that changes no pixel is
not redrawn (it simply costs a query).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from drojax.attacks.projected import LogitsFn, _check_inputs, _check_number

SQUARE_NORMS = ("linf",)
_P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i: jax.Array, num_queries: int, p_init: float) -> jax.Array:
  """The fraction of pixels the ``i``-th query's square covers (see the module docstring).

  Args:
    i: the query index (int or traced int32).
    num_queries: the budget the schedule is rescaled to.
    p_init: the fraction at the start.

  Returns:
    A float32 scalar ``p_init / 2^m``.

  Example:
    >>> [float(p_schedule(i, 5000, 0.8)) for i in (1, 10, 100, 4999)]
    [0.800000011920929, 0.4000000059604645, 0.20000000298023224, 0.0015625000232830644]
  """
  t = (jnp.asarray(i, jnp.int32) * 10000) // num_queries
  m = sum((t > th).astype(jnp.int32) for th in _P_THRESHOLDS)
  return jnp.float32(p_init) / (2.0 ** m).astype(jnp.float32)


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """``z_y - max_{j != y} z_j`` per example; <= 0 means misclassified.

  Args:
    logits: ``[B, K]`` logits.
    y: integer labels ``[B]``.

  Returns:
    ``[B]`` float32 margins.

  Example:
    >>> import jax.numpy as jnp
    >>> margin(jnp.array([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]]), jnp.array([0, 2])).tolist()
    [1.0, -2.0]
  """
  z = logits.astype(jnp.float32)
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
  return z_y - jnp.max(others, axis=-1)


def _square_linf(key, logits_fn, x, y, eps, active, *, num_queries, p_init):
  b, h, w, c = x.shape
  y = y.astype(jnp.int32)
  eps = jnp.asarray(eps, x.dtype)
  k_init, key = jax.random.split(key)
  stripes = jax.random.rademacher(k_init, (b, 1, w, c), x.dtype)
  x_best = jnp.clip(x + eps * stripes, 0.0, 1.0)
  m_best = margin(logits_fn(x_best), y)
  clean_ok = jnp.argmax(logits_fn(x), axis=-1) == y
  active = active & clean_ok
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]

  def body(s):
    i, x_best, m_best = s
    p = p_schedule(i, num_queries, p_init)
    side = jnp.clip(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 1, max(h - 1, 1))
    kh, kw, ks = jax.random.split(jax.random.fold_in(key, i), 3)
    top = jax.random.randint(kh, (b, 1, 1, 1), 0, h - side + 1)
    left = jax.random.randint(kw, (b, 1, 1, 1), 0, w - side + 1)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    signs = jax.random.rademacher(ks, (b, 1, 1, c), x.dtype)
    cand = jnp.where(window, jnp.clip(x + eps * signs, 0.0, 1.0), x_best)
    m = margin(logits_fn(cand), y)
    take = active & (m_best > 0) & (m < m_best)
    return (i + 1, jnp.where(take[:, None, None, None], cand, x_best),
            jnp.where(take, m, m_best))

  def cond(s):
    return (s[0] < num_queries) & jnp.any(active & (s[2] > 0))

  _, x_best, m_best = jax.lax.while_loop(cond, body, (jnp.int32(1), x_best, m_best))
  # Examples not attacked (inactive or clean-wrong) keep the clean image.
  x_adv = jnp.where(active[:, None, None, None], x_best, x)
  fooled = jnp.argmax(logits_fn(x_adv), axis=-1) != y
  return x_adv, clean_ok & ~fooled


@functools.partial(jax.jit, static_argnames=("logits_fn", "num_queries"))
def _square_impl(key, logits_fn, x, y, eps, active, p_init, *, num_queries):
  return _square_linf(key, logits_fn, x, y, eps, active, num_queries=num_queries,
                      p_init=p_init)


def _check_square(logits_fn, x, y, eps, norm, num_queries, p_init):
  _check_inputs(x, y, "square")
  _check_number(eps, "eps")
  if norm not in SQUARE_NORMS:
    raise ValueError(f"norm must be one of {SQUARE_NORMS} for square (the L2 variant is not "
                     f"implemented); got {norm!r}.")
  if (not isinstance(num_queries, (int, np.integer)) or isinstance(num_queries, bool)
      or num_queries < 1):
    raise ValueError(f"num_queries must be an int >= 1; got {num_queries!r}.")
  _check_number(p_init, "p_init", positive=True)
  if not isinstance(p_init, jax.core.Tracer) and float(p_init) > 1:
    raise ValueError(f"p_init must be in (0, 1]; got {p_init!r}.")
  if not callable(logits_fn):
    raise TypeError(f"square: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")


def square_robust(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                  eps: float | jax.Array, norm: str = "linf", num_queries: int = 5000,
                  p_init: float = 0.8) -> tuple[jax.Array, jax.Array]:
  """Square attack; returns ``(x_adv [B, H, W, C], robust [B] bool)``.

  Args:
    key: PRNG key.
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode (static); only its outputs
      are used, never its gradients.
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: L-inf budget in pixel units, >= 0 (traced).
    norm: ``'linf'`` (the only norm implemented).
    num_queries: model evaluations per example, >= 1 (static).
    p_init: initial fraction of pixels a square covers, in (0, 1] (traced).

  Returns:
    ``x_adv`` in the eps-ball and [0, 1] (the clean image for clean-misclassified examples)
    and ``robust``: clean-correct and ``x_adv`` still classified correctly.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), 0.5 - z.mean((1, 2, 3))], -1)
    >>> x = jnp.array([0.9, 0.3]).reshape(2, 1, 1, 1)
    >>> _, robust = square_robust(jax.random.key(0), f, x, jnp.array([0, 1]), eps=0.3,
    ...                           num_queries=20)
    >>> robust.tolist()
    [True, False]
  """
  _check_square(logits_fn, x, y, eps, norm, num_queries, p_init)
  return _square_impl(key, logits_fn, x, y, eps, jnp.ones(x.shape[0], bool),
                      jnp.float32(p_init), num_queries=int(num_queries))


def square(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
           eps: float | jax.Array, norm: str = "linf", num_queries: int = 5000,
           p_init: float = 0.8) -> jax.Array:
  """Square attack; returns the adversarial images (see :func:`square_robust`).

  Args:
    key, logits_fn, x, y, eps, norm, num_queries, p_init: as :func:`square_robust`.

  Returns:
    ``x_adv [B, H, W, C]`` in the eps-ball and [0, 1].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)
    >>> x = jnp.full((2, 4, 4, 3), 0.5)
    >>> x_adv = square(jax.random.key(0), f, x, jnp.array([0, 1]), eps=8 / 255,
    ...                num_queries=10)
    >>> bool(jnp.abs(x_adv - x).max() <= 8 / 255 + 1e-6)
    True
  """
  return square_robust(key, logits_fn, x, y, eps=eps, norm=norm, num_queries=num_queries,
                       p_init=p_init)[0]


__all__ = ["SQUARE_NORMS", "p_schedule", "margin", "square", "square_robust"]
