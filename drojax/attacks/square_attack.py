"""The Square attack (Andriushchenko et al., ECCV 2020): score-based, no gradients, L-inf and L2.

Images are NHWC float in [0, 1]; the model is only queried, ``logits_fn(x) -> [B, K]``. Both
norms are random searches that minimise the margin ``z_y - max_{j != y} z_j``, keep a
candidate only if it lowers an example's margin, and stop updating an example once its margin
is <= 0 (fooled). The query loop is a ``lax.while_loop`` that ends when every attacked example
is fooled or the budget is spent, so it jits and a second batch of the same shape reuses the
compiled program. ``num_queries`` counts model evaluations per example, the start included.

Both shrink the window on the schedule of the reference code, rescaled to ``num_queries``:
with ``t = floor(10000 i / num_queries)``, ``p = p_init / 2^m`` where ``m`` counts the
thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 below ``t``.

**L-inf** (perturbations at the corners of the ball):

* start: vertical stripes, ``x + eps * s`` with one sign ``s in {-1, +1}`` per column and
  channel, clipped to [0, 1];
* each query draws, per example, a square window of side ``h_i = round(sqrt(p_i H W))``
  (at least 1, at most ``H - 1``) at a uniform position and one sign per channel, and sets the
  window to ``clip(x + eps * sign)``.

**L2** (the perturbation ``nu = x_best - x`` always has norm ``eps`` before clipping):

* ``eta(s)``, the paper's window pattern: the top ``s // 2`` rows and the bottom
  ``s - s // 2`` rows each hold concentric rectangles whose value at Chebyshev distance ``d``
  from the centre is ``sum_{k=d+1}^{s//2+1} 1 / k^2``, each half scaled to unit norm, the
  bottom half negated, the whole scaled to unit norm (and transposed with probability 1/2);
* start: a grid of ``n x n`` blocks of side ``b = max(min(H, W) // 5, 1)`` (``n = H // b``
  rows, ``W // b`` columns, centred), each ``eta(b)`` times a random sign per channel, the
  whole scaled to L2 norm ``eps`` and clipped to [0, 1];
* each query draws two windows ``W1``, ``W2`` of side ``s = round(sqrt(p_i H W))``, at least
  3, made odd, at most ``min(H, W)``, and moves the perturbation's mass in both windows, plus
  the budget the clipping left unused, into ``W1`` along a new direction (Algorithm 3 of the
  paper, per channel ``c``)::

      unused = eps^2 - ||nu||^2
      t      = rho_c eta(s) + nu[W1, c] / ||nu[W1, c]||          (rho_c = +-1)
      nu[W2, c] = 0;  nu[W1, c] = t / ||t|| * sqrt(||nu[W1 u W2, c]||^2 + unused / C)

  so ``||nu|| = eps`` again; the candidate is ``clip(x + nu, 0, 1)``.

Differences from the reference code (read for understanding only): windows, signs and the
L2 pattern's transposition are drawn per example rather than once per query for the whole
batch; a window may start at any row/column where it fits (the reference draws the corner
from ``[0, H - s)``, so a window never touches the last row or column); a candidate that
changes no pixel is not redrawn (it simply costs a query). L2: the mass of ``W1 u W2`` is
measured per channel as in the paper's Algorithm 3 (the reference code measures it over all
channels and then rescales the whole perturbation to ``eps``; for one channel the two agree);
the start's block grid is centred and always inside the image (the reference's grid runs past
the border for some sizes under 10 pixels and fails below 5); windows wider than the image
are shrunk to ``min(H, W)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_labels, check_static_int
from drojax.attacks.projected import (LogitsFn, _TINY, _check_inputs, _check_number, _l2_norm,
                                      _labels_valid, _project)

SQUARE_NORMS = ("linf", "l2")
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
  check_labels("y", y, z.shape[-1])
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
  return jnp.where(_labels_valid(y, z.shape[-1]), z_y - jnp.max(others, axis=-1), jnp.nan)


def eta(side: int | jax.Array, size: int) -> jax.Array:
  """The L2 window pattern ``eta(side)`` at the top-left of a ``[size, size]`` zero canvas.

  Args:
    side: the window side, 1 <= side <= size (int or traced int32).
    size: the canvas side (static).

  Returns:
    ``[size, size]`` float32 with unit L2 norm: the pattern in ``[:side, :side]`` (see the
    module docstring), 0 elsewhere.

  Example:
    >>> e = eta(3, 4)
    >>> [[round(float(v), 3) for v in row] for row in e[:3, :3]], float(abs(e[3]).sum())
    ([[0.136, 0.68, 0.136], [-0.129, -0.129, -0.129], [-0.129, -0.645, -0.129]], 0.0)
  """
  side = jnp.asarray(side, jnp.int32)
  r = jnp.arange(size)[:, None]
  c = jnp.arange(size)[None, :]
  half = side // 2
  top = r < half
  rr = jnp.where(top, r, r - half)  # the row within its half
  nrows = jnp.where(top, half, side - half)
  d = jnp.maximum(jnp.abs(rr - nrows // 2), jnp.abs(c - side // 2))
  k = jnp.maximum(nrows // 2, side // 2) + 1
  # h2[n] = sum_{m=1}^{n} 1/m^2, so the value at distance d is h2[k] - h2[d].
  h2 = jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 2) ** 2)]),
                   jnp.float32)
  inside = (r < side) & (c < side)
  v = jnp.where(inside, h2[jnp.clip(k, 0, size + 1)] - h2[jnp.clip(d, 0, size + 1)], 0.0)
  n_top = jnp.sqrt(jnp.sum(jnp.where(top, v * v, 0.0)))
  n_bottom = jnp.sqrt(jnp.sum(jnp.where(top, 0.0, v * v)))
  v = jnp.where(top, v / jnp.maximum(n_top, _TINY), -v / jnp.maximum(n_bottom, _TINY))
  return v / jnp.sqrt(jnp.sum(v * v))


def _search(logits_fn, x, y, active, x_init, propose, num_queries):
  """The random search shared by both norms: ``propose(i, x_best) -> candidate``."""
  y = y.astype(jnp.int32)
  m_best = margin(logits_fn(x_init), y)
  clean_ok = jnp.argmax(logits_fn(x), axis=-1) == y
  active = active & clean_ok

  def body(s):
    i, x_best, m_best = s
    cand = propose(i, x_best)
    m = margin(logits_fn(cand), y)
    take = active & (m_best > 0) & (m < m_best)
    return (i + 1, jnp.where(take[:, None, None, None], cand, x_best),
            jnp.where(take, m, m_best))

  def cond(s):
    return (s[0] < num_queries) & jnp.any(active & (s[2] > 0))

  _, x_best, m_best = jax.lax.while_loop(cond, body, (jnp.int32(1), x_init, m_best))
  # Examples not attacked (inactive or clean-wrong) keep the clean image.
  x_adv = jnp.where(active[:, None, None, None], x_best, x)
  fooled = jnp.argmax(logits_fn(x_adv), axis=-1) != y
  return x_adv, clean_ok & ~fooled


def _square_linf(key, logits_fn, x, y, eps, active, *, num_queries, p_init):
  b, h, w, c = x.shape
  eps = jnp.asarray(eps, x.dtype)
  k_init, key = jax.random.split(key)
  stripes = jax.random.rademacher(k_init, (b, 1, w, c), x.dtype)
  x_init = jnp.clip(x + eps * stripes, 0.0, 1.0)
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]

  def propose(i, x_best):
    p = p_schedule(i, num_queries, p_init)
    side = jnp.clip(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 1, max(h - 1, 1))
    kh, kw, ks = jax.random.split(jax.random.fold_in(key, i), 3)
    top = jax.random.randint(kh, (b, 1, 1, 1), 0, h - side + 1)
    left = jax.random.randint(kw, (b, 1, 1, 1), 0, w - side + 1)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    signs = jax.random.rademacher(ks, (b, 1, 1, c), x.dtype)
    return jnp.where(window, jnp.clip(x + eps * signs, 0.0, 1.0), x_best)

  return _search(logits_fn, x, y, active, x_init, propose, num_queries)


def _l2_init(key, x, eps):
  """The L2 start: a centred grid of ``eta`` blocks with random signs, at norm ``eps``."""
  b, h, w, c = x.shape
  bs = max(min(h, w) // 5, 1)
  nh, nw = h // bs, w // bs
  r = jnp.arange(h) - (h - nh * bs) // 2
  q = jnp.arange(w) - (w - nw * bs) // 2
  in_grid = ((r >= 0) & (r < nh * bs))[:, None] & ((q >= 0) & (q < nw * bs))[None, :]
  bi = jnp.clip(r // bs, 0, nh - 1)[:, None]  # [H, 1] block row of each pixel
  bj = jnp.clip(q // bs, 0, nw - 1)[None, :]  # [1, W]
  u, v = (r % bs)[:, None], (q % bs)[None, :]  # the position inside the block
  pattern = eta(bs, bs)
  kt, ks = jax.random.split(key)
  flip = jax.random.bernoulli(kt, 0.5, (b, nh, nw))[:, bi, bj]  # [B, H, W]
  value = jnp.where(flip, pattern[v, u], pattern[u, v])
  signs = jax.random.rademacher(ks, (b, nh, nw, c), x.dtype)[:, bi, bj]  # [B, H, W, C]
  delta = jnp.where(in_grid[None, :, :, None], value[..., None].astype(x.dtype) * signs, 0.0)
  delta = delta * (eps / _l2_norm(delta))
  return jnp.clip(x + delta, 0.0, 1.0)


def _square_l2(key, logits_fn, x, y, eps, active, *, num_queries, p_init):
  b, h, w, c = x.shape
  eps = jnp.asarray(eps, x.dtype)
  k_init, key = jax.random.split(key)
  x_init = _l2_init(k_init, x, eps)
  size = min(h, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]

  def window(k, side):
    kh, kw = jax.random.split(k)
    top = jax.random.randint(kh, (b, 1, 1), 0, h - side + 1)
    left = jax.random.randint(kw, (b, 1, 1), 0, w - side + 1)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return inside[..., None], rows - top, cols - left  # [B, H, W, 1], [B, H, 1], [B, 1, W]

  def channel_norm(z):  # per example and channel: [B, 1, 1, C]
    return jnp.sqrt(jnp.sum(z * z, axis=(1, 2), keepdims=True))

  def propose(i, x_best):
    p = p_schedule(i, num_queries, p_init)
    side = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 3)
    side = jnp.minimum(side + (side % 2 == 0), size)
    k1, k2, kt, ks = jax.random.split(jax.random.fold_in(key, i), 4)
    w1, du, dv = window(k1, side)
    w2, _, _ = window(k2, side)
    pattern = eta(side, size)
    du = jnp.clip(du, 0, size - 1)
    dv = jnp.clip(dv, 0, size - 1)
    flip = jax.random.bernoulli(kt, 0.5, (b, 1, 1))
    new = jnp.where(flip, pattern[dv, du], pattern[du, dv])[..., None].astype(x.dtype)
    new = jnp.where(w1, new, 0.0) * jax.random.rademacher(ks, (b, 1, 1, c), x.dtype)
    nu = x_best - x
    unused = jnp.maximum(eps * eps - jnp.sum(nu * nu, axis=(1, 2, 3), keepdims=True), 0.0)
    old = jnp.where(w1, nu, 0.0)
    t = new + old / jnp.maximum(channel_norm(old), _TINY)
    mass = jnp.sqrt(channel_norm(jnp.where(w1 | w2, nu, 0.0)) ** 2 + unused / c)
    nu = jnp.where(w1, t / jnp.maximum(channel_norm(t), _TINY) * mass,
                   jnp.where(w2, 0.0, nu))
    # ||nu|| = eps up to rounding; the projection keeps rounding from leaving the ball.
    return _project(x + nu, x, eps, "l2")

  return _search(logits_fn, x, y, active, x_init, propose, num_queries)


def _square_run(key, logits_fn, x, y, eps, active, *, norm, num_queries, p_init):
  """``(x_adv, robust)`` for the examples in ``active``; the others keep ``x``."""
  run = _square_linf if norm == "linf" else _square_l2
  return run(key, logits_fn, x, y, eps, active, num_queries=num_queries, p_init=p_init)


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "num_queries"))
def _square_impl(key, logits_fn, x, y, eps, active, p_init, *, norm, num_queries):
  return _square_run(key, logits_fn, x, y, eps, active, norm=norm, num_queries=num_queries,
                     p_init=p_init)


def _check_square(logits_fn, x, y, eps, norm, num_queries, p_init):
  _check_inputs(x, y, "square", logits_fn)
  _check_number(eps, "eps")
  if norm not in SQUARE_NORMS:
    raise ValueError(f"norm must be one of {SQUARE_NORMS} for square; got {norm!r}.")
  check_static_int("num_queries", num_queries, minimum=1)
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
    eps: budget in pixel units in the chosen norm, >= 0 (traced).
    norm: ``'linf'`` or ``'l2'`` (static).
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
                      jnp.float32(p_init), norm=norm, num_queries=int(num_queries))


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


__all__ = ["SQUARE_NORMS", "eta", "p_schedule", "margin", "square", "square_robust"]
