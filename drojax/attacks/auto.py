"""Auto-PGD (Croce & Hein, ICML 2020): APGD with the CE or DLR loss, and targeted APGD-T.

APGD is PGD with momentum and a step size that adapts per example instead of being tuned:

* the step starts at ``2 * eps`` and the first iterate is a random point at distance ``eps``
  (L-inf: a uniform draw scaled so its largest coordinate is ``eps``; L2: a Gaussian
  direction of length ``eps``), clipped to [0, 1];
* each step is ``z = P(x_k + eta * s(g_k))``, then ``x_{k+1} = P(x_k + a (z - x_k) +
  (1 - a)(x_k - x_{k-1}))`` with momentum ``a = 0.75`` (``a = 1`` on the first step), where
  ``P`` projects on the eps-ball and [0, 1] and ``s`` is ``sign`` (L-inf) or ``g / ||g||``;
* at checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j +
  max(p_j - p_{j-1} - 0.03, 0.06)``, an example's step is halved and its iterate restarted
  from its best point when (1) the loss went up in at most 75 % of the steps since the last
  checkpoint, or (2) the step was not halved at the last checkpoint and the best loss has not
  improved since.

The loss is **maximised**: the best-so-far loss per example is non-decreasing over the
iterations (:func:`apgd_trace` returns it). An example counts as fooled when any iterate
(including the random start) is misclassified; the returned point is then the last such
iterate, else the point of highest loss.

Losses on logits ``z`` with ``pi`` the classes sorted by decreasing logit:

* ``'ce'``: softmax cross-entropy;
* ``'dlr'``: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` (needs K >= 3);
* targeted DLR (APGD-T, target ``t``): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``
  (needs K >= 4), run once per target: the 2nd, 3rd, ... ``num_targets + 1``-th class by
  clean logit.

Differences from the reference implementation (``fra31/auto-attack``), read for
understanding only: condition (1)'s increase count starts from the random start's loss
(the reference compares the first step against an uninitialised zero); a restart or target
only matters for examples no earlier one fooled, as in AutoAttack, but under ``jit`` every
example is attacked and the result masked (the loop over steps stops early once every
attacked example is fooled, which changes no verdict).

All functions jit with ``logits_fn``, ``norm``, ``num_steps``, ``loss``, ``restarts`` and
``num_targets`` static; ``eps`` is traced (a new eps does not recompile).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from drojax import losses as _losses
from drojax._checks import check_labels, check_static_int
from drojax.attacks.projected import (NORMS, LogitsFn, _TINY, _check_inputs, _check_number,
                                      _l2_norm, _labels_valid, _project, count_classes)

LOSSES = ("ce", "dlr")
MOMENTUM = 0.75
RHO = 0.75  # condition (1): the share of increasing steps at or below which the step halves
_DLR_EPS = 1e-12


def checkpoints(num_steps: int) -> list[tuple[int, int]]:
  """The step-size checkpoints of an ``num_steps``-iteration APGD run.

  The paper's ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j +
  max(p_j - p_{j-1} - 0.03, 0.06)``, for ``p_j <= 1``. (The reference code uses integer
  gaps ``int(0.22 N)`` shrinking by ``int(0.03 N)``; both agree when N is a multiple of 100.)

  Args:
    num_steps: iterations ``N`` >= 1.

  Returns:
    ``[(i, k), ...]``: after iteration ``i`` (0-based, ``i = w_j - 1``) a checkpoint closes
    a window of the ``k = w_j - w_{j-1}`` iterations before it.

  Example:
    >>> checkpoints(100)[:4]
    [(21, 22), (40, 19), (56, 16), (69, 13)]
  """
  p_prev, p = 0.0, 0.22
  out, w_prev = [], 0
  while p <= 1.0 + 1e-9:
    # round(): 0.22 + 0.19 is 0.41000000000000003 in binary floating point.
    w = math.ceil(round(p * num_steps, 9))
    if w > w_prev:
      out.append((w - 1, w - w_prev))
      w_prev = w
    p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
  return out


def _sorted_desc(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  return jax.lax.top_k(logits, k)


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference-of-logits-ratio loss ``[B]`` (to maximise), for ``logits [B, K]``, K >= 3.

  .. math:: \\mathrm{DLR}(z, y) = -\\frac{z_y - \\max_{j \\ne y} z_j}{z_{\\pi_1} - z_{\\pi_3}}

  Args:
    logits: ``[B, K]`` logits, K >= 3.
    y: integer labels ``[B]``.

  Returns:
    ``[B]`` float32 losses (1e-12 is added to the denominator).

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(dlr_loss(jnp.array([[3.0, 1.0, 0.0]]), jnp.array([0]))[0]), 6)
    -0.666667
  """
  z = logits.astype(jnp.float32)
  check_labels("y", y, z.shape[-1])
  top, idx = _sorted_desc(z, 3)
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  other = jnp.where(idx[:, 0] == y, top[:, 1], top[:, 0])
  loss = -(z_y - other) / (top[:, 0] - top[:, 2] + _DLR_EPS)
  return jnp.where(_labels_valid(y, z.shape[-1]), loss, jnp.nan)


def dlr_targeted_loss(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted DLR loss ``[B]`` (to maximise) towards classes ``target [B]``; K >= 4.

  .. math:: -\\frac{z_y - z_t}{z_{\\pi_1} - (z_{\\pi_3} + z_{\\pi_4}) / 2}

  Args:
    logits: ``[B, K]`` logits, K >= 4.
    y: integer labels ``[B]``.
    target: integer target classes ``[B]``.

  Returns:
    ``[B]`` float32 losses.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(dlr_targeted_loss(jnp.array([[4.0, 2.0, 1.0, 0.0]]), jnp.array([0]),
    ...                               jnp.array([1]))[0]), 6)
    -0.571429
  """
  z = logits.astype(jnp.float32)
  check_labels("y", y, z.shape[-1])
  check_labels("target", target, z.shape[-1])
  top, _ = _sorted_desc(z, 4)
  z_y = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(z, target[:, None], axis=-1)[:, 0]
  loss = -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS)
  valid = _labels_valid(y, z.shape[-1]) & _labels_valid(target, z.shape[-1])
  return jnp.where(valid, loss, jnp.nan)


def _loss(logits, y, target, loss):
  z = logits.astype(jnp.float32)
  if loss == "ce":
    return _losses.cross_entropy(z, y)
  if loss == "dlr":
    return dlr_loss(z, y)
  return dlr_targeted_loss(z, y, target)


def _bcast(m):
  return m[:, None, None, None]


def _apgd_start(key, x, eps, norm):
  if norm == "linf":
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t = t / jnp.maximum(jnp.max(jnp.abs(t), axis=(1, 2, 3), keepdims=True), _TINY)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
    t = t / jnp.maximum(_l2_norm(t), _TINY)
  return jnp.clip(x + eps * t, 0.0, 1.0)


def _apgd_single(key, logits_fn, x, y, target, eps, active, *, norm, num_steps, loss,
                 early_stop):
  """One APGD run. Returns (x_best, loss_best, x_fool, fooled, trace [num_steps + 1, B])."""
  b = x.shape[0]

  def value_grad(z):
    def f(z):
      logits = logits_fn(z)
      l = _loss(logits, y, target, loss)
      return jnp.sum(l), (l, jnp.argmax(logits, axis=-1) != y)
    (_, (l, wrong)), g = jax.value_and_grad(f, has_aux=True)(z)
    return l, wrong, g

  ckpts = checkpoints(num_steps)
  is_ckpt = np.zeros(num_steps, bool)
  window = np.ones(num_steps, np.float32)
  for i, k in ckpts:
    is_ckpt[i], window[i] = True, k
  is_ckpt, window = jnp.asarray(is_ckpt), jnp.asarray(window)

  x0 = _apgd_start(key, x, eps, norm)
  l0, wrong0, g0 = value_grad(x0)
  step0 = jnp.full((b,), 2.0, x.dtype) * eps
  trace0 = jnp.zeros((num_steps + 1, b), jnp.float32).at[0].set(l0)
  state = dict(i=jnp.int32(0), x=x0, x_prev=x0, g=g0, l=l0, x_best=x0, g_best=g0, l_best=l0,
               x_fool=x0, fooled=wrong0, step=step0, n_inc=jnp.zeros((b,), jnp.float32),
               l_best_ckpt=l0, reduced=jnp.zeros((b,), bool), trace=trace0)

  def direction(g):
    if norm == "linf":
      return jnp.sign(g)
    return g / jnp.maximum(_l2_norm(g), _TINY)

  def body(s):
    i = s["i"]
    a = jnp.where(i == 0, 1.0, MOMENTUM).astype(x.dtype)
    xk = s["x"]
    z = _project(xk + _bcast(s["step"]) * direction(s["g"]), x, eps, norm)
    z = _project(xk + a * (z - xk) + (1 - a) * (xk - s["x_prev"]), x, eps, norm)
    l, wrong, g = value_grad(z)
    x_fool = jnp.where(_bcast(wrong), z, s["x_fool"])
    fooled = s["fooled"] | wrong
    n_inc = s["n_inc"] + (l > s["l"]).astype(jnp.float32)
    better = l > s["l_best"]
    x_best = jnp.where(_bcast(better), z, s["x_best"])
    g_best = jnp.where(_bcast(better), g, s["g_best"])
    l_best = jnp.where(better, l, s["l_best"])
    ck = is_ckpt[i]
    oscillating = n_inc <= RHO * window[i]
    stalled = jnp.logical_not(s["reduced"]) & (s["l_best_ckpt"] >= l_best)
    halve = ck & (oscillating | stalled)
    return dict(
        i=i + 1, x=jnp.where(_bcast(halve), x_best, z), x_prev=xk,
        g=jnp.where(_bcast(halve), g_best, g), l=l, x_best=x_best, g_best=g_best,
        l_best=l_best, x_fool=x_fool, fooled=fooled,
        step=jnp.where(halve, s["step"] / 2, s["step"]),
        n_inc=jnp.where(ck, 0.0, n_inc),
        l_best_ckpt=jnp.where(ck, l_best, s["l_best_ckpt"]),
        reduced=jnp.where(ck, halve, s["reduced"]),
        trace=s["trace"].at[i + 1].set(l_best))

  def cond(s):
    go = s["i"] < num_steps
    if early_stop:
      go = go & jnp.any(active & jnp.logical_not(s["fooled"]))
    return go

  s = jax.lax.while_loop(cond, body, state)
  return s["x_best"], s["l_best"], s["x_fool"], s["fooled"], s["trace"]


def _targets(logits_fn, x, num_targets):
  """Target classes ``[num_targets, B]``: the 2nd ... (num_targets+1)-th class by clean logit."""
  _, idx = jax.lax.top_k(logits_fn(x).astype(jnp.float32), num_targets + 1)
  return idx[:, 1:].T


def _apgd_runs(key, logits_fn, x, y, eps, active, *, norm, num_steps, loss, restarts,
               num_targets):
  """Restarts (x targets) of APGD: returns (x_adv, robust [B]), robust = clean-correct & unfooled.

  A later run only matters for examples no earlier run fooled; the loop over runs stops
  once every ``active`` example is fooled.
  """
  eps = jnp.asarray(eps, x.dtype)
  y = y.astype(jnp.int32)
  clean_ok = jnp.argmax(logits_fn(x), axis=-1) == y
  active = active & clean_ok
  if loss == "dlr_targeted":
    targets = _targets(logits_fn, x, num_targets)
  else:
    targets = jnp.zeros((1, x.shape[0]), jnp.int32)
  n_t = targets.shape[0]
  total = n_t * restarts

  def body(s):
    r, x_out, l_out, fooled = s
    t = r // restarts
    xb, lb, xf, fl, _ = _apgd_single(
        jax.random.fold_in(key, r), logits_fn, x, y, targets[t], eps, active & ~fooled,
        norm=norm, num_steps=num_steps, loss=loss, early_stop=True)
    newly = fl & ~fooled
    keep_best = ~fooled & ~fl & (lb > l_out)
    x_out = jnp.where(_bcast(newly), xf, jnp.where(_bcast(keep_best), xb, x_out))
    l_out = jnp.where(keep_best, lb, l_out)
    return r + 1, x_out, l_out, fooled | fl

  def cond(s):
    return (s[0] < total) & jnp.any(active & ~s[3])

  init = (jnp.int32(0), x, jnp.full((x.shape[0],), -jnp.inf, jnp.float32),
          jnp.logical_not(clean_ok))
  _, x_out, _, fooled = jax.lax.while_loop(cond, body, init)
  return x_out, clean_ok & ~fooled


_STATIC = ("logits_fn", "norm", "num_steps", "loss", "restarts", "num_targets")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _apgd_impl(key, logits_fn, x, y, eps, active, *, norm, num_steps, loss, restarts,
               num_targets):
  return _apgd_runs(key, logits_fn, x, y, eps, active, norm=norm, num_steps=num_steps,
                    loss=loss, restarts=restarts, num_targets=num_targets)


def _check_apgd(name, logits_fn, x, y, eps, norm, num_steps, restarts):
  _check_inputs(x, y, name, logits_fn)
  _check_number(eps, "eps")
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}.")
  check_static_int("num_steps", num_steps, minimum=1)
  check_static_int("restarts", restarts, minimum=1)
  if not callable(logits_fn):
    raise TypeError(f"{name}: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")


def apgd_robust(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
                loss: str = "ce", restarts: int = 1) -> tuple[jax.Array, jax.Array]:
  """Untargeted APGD; returns the worst points and whether each example withstood them.

  Args:
    key: PRNG key (restart ``r`` uses ``fold_in(key, r)``).
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode (static).
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: budget in pixel units, >= 0 (traced).
    norm: ``'linf'`` or ``'l2'``.
    num_steps: iterations per restart, >= 1.
    loss: ``'ce'`` (cross-entropy) or ``'dlr'`` (needs K >= 3).
    restarts: random restarts, >= 1; an example is robust only if it survives all.

  Returns:
    ``(x_adv [B, H, W, C], robust [B] bool)``: ``x_adv`` is a misclassified iterate where
    one was found, else the highest-loss point; ``robust`` is clean-correct and never fooled.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), 0.5 - z.mean((1, 2, 3))], -1)
    >>> x = jnp.array([0.9, 0.3]).reshape(2, 1, 1, 1)  # margins 0.8 and 0.4 (class 0, 1)
    >>> _, robust = apgd_robust(jax.random.key(0), f, x, jnp.array([0, 1]), eps=0.3,
    ...                         num_steps=10)
    >>> robust.tolist()  # a shift of 0.3 moves the margin by 0.6
    [True, False]
  """
  _check_apgd("apgd", logits_fn, x, y, eps, norm, num_steps, restarts)
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}.")
  if loss == "dlr" and count_classes(logits_fn, x) < 3:
    raise ValueError(f"loss='dlr' needs at least 3 classes; logits_fn returns "
                     f"{count_classes(logits_fn, x)}. Use loss='ce'.")
  return _apgd_impl(key, logits_fn, x, y, eps, jnp.ones(x.shape[0], bool), norm=norm,
                    num_steps=num_steps, loss=loss, restarts=restarts, num_targets=0)


def apgd(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
         eps: float | jax.Array, norm: str = "linf", num_steps: int = 100, loss: str = "ce",
         restarts: int = 1) -> jax.Array:
  """Untargeted Auto-PGD; returns the per-example worst point found ``[B, H, W, C]``.

  Every returned point lies in the eps-ball around ``x`` and in [0, 1].

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, loss, restarts: as :func:`apgd_robust`.

  Returns:
    ``x_adv [B, H, W, C]``: a misclassified iterate where one was found, else the
    highest-loss point.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)
    >>> x = jnp.full((2, 4, 4, 3), 0.5)
    >>> x_adv = apgd(jax.random.key(0), f, x, jnp.array([0, 1]), eps=8 / 255, num_steps=5)
    >>> bool(jnp.abs(x_adv - x).max() <= 8 / 255 + 1e-6)
    True
  """
  return apgd_robust(key, logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps,
                     loss=loss, restarts=restarts)[0]


def _check_targets(logits_fn, x, num_targets):
  k = count_classes(logits_fn, x)
  if k < 4:
    raise ValueError(f"apgd_targeted needs at least 4 classes (the targeted DLR loss uses the "
                     f"4th largest logit); logits_fn returns {k}. Use apgd(..., loss='ce').")
  check_static_int("num_targets", num_targets, minimum=1)
  if num_targets > k - 1:
    raise ValueError(f"num_targets must be <= K - 1 = {k - 1} (the non-true classes); got "
                     f"{num_targets}.")


def apgd_targeted_robust(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                         eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
                         num_targets: int = 9, restarts: int = 1
                         ) -> tuple[jax.Array, jax.Array]:
  """APGD-T: APGD on the targeted DLR loss, once per target class; (x_adv, robust).

  The targets are, per example, the classes ranked 2nd to ``num_targets + 1``-th by the
  clean logits. An example is robust if clean-correct and no target's run misclassifies it
  (a run counts any misclassification, not only the target class).

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, restarts: as :func:`apgd_robust` (run
      ``r`` of target ``t`` uses ``fold_in(key, t * restarts + r)``).
    num_targets: target classes, 1 <= num_targets <= K - 1; K must be >= 4.

  Returns:
    ``(x_adv [B, H, W, C], robust [B] bool)`` as :func:`apgd_robust`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -1.0, 0.0, 0.0])
    >>> f = lambda z: z.mean((1, 2, 3))[:, None] * w[None] + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = jnp.array([0.9, 0.3]).reshape(2, 1, 1, 1)  # margins 0.8, 0.1; eps moves them 0.2
    >>> _, robust = apgd_targeted_robust(jax.random.key(0), f, x, jnp.array([0, 0]),
    ...                                  eps=0.1, num_steps=10, num_targets=3)
    >>> robust.tolist()
    [True, False]
  """
  _check_apgd("apgd_targeted", logits_fn, x, y, eps, norm, num_steps, restarts)
  _check_targets(logits_fn, x, num_targets)
  return _apgd_impl(key, logits_fn, x, y, eps, jnp.ones(x.shape[0], bool), norm=norm,
                    num_steps=num_steps, loss="dlr_targeted", restarts=restarts,
                    num_targets=num_targets)


def apgd_targeted(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                  eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
                  num_targets: int = 9, restarts: int = 1) -> jax.Array:
  """APGD-T; returns the per-example worst point found (see :func:`apgd_targeted_robust`).

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, num_targets, restarts: as
      :func:`apgd_targeted_robust`.

  Returns:
    ``x_adv [B, H, W, C]`` in the eps-ball and [0, 1].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.concatenate([z.mean((1, 2, 3))[:, None], jnp.zeros((z.shape[0], 3))], -1)
    >>> x = jnp.full((1, 2, 2, 1), 0.5)
    >>> x_adv = apgd_targeted(jax.random.key(0), f, x, jnp.array([0]), eps=0.1, num_steps=3,
    ...                       num_targets=3)
    >>> bool(jnp.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
  """
  return apgd_targeted_robust(key, logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps,
                              num_targets=num_targets, restarts=restarts)[0]


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "num_steps", "loss"))
def _trace_impl(key, logits_fn, x, y, eps, *, norm, num_steps, loss):
  y = y.astype(jnp.int32)
  x_best, _, _, _, trace = _apgd_single(
      key, logits_fn, x, y, jnp.zeros_like(y), jnp.asarray(eps, x.dtype),
      jnp.ones(x.shape[0], bool), norm=norm, num_steps=num_steps, loss=loss, early_stop=False)
  return x_best, trace


def apgd_trace(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
               eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
               loss: str = "ce") -> tuple[jax.Array, jax.Array]:
  """One APGD run without early stop; returns its best point and best-so-far loss trace.

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, loss: as :func:`apgd_robust`.

  Returns:
    ``(x_best [B, H, W, C], trace [num_steps + 1, B])``: ``trace[t]`` is the highest loss
    among the random start and the first ``t`` iterates (non-decreasing in ``t``), and
    ``trace[-1]`` is the loss at ``x_best``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)
    >>> _, tr = apgd_trace(jax.random.key(0), f, jnp.full((1, 2, 2, 1), 0.5), jnp.array([0]),
    ...                    eps=0.1, num_steps=4)
    >>> tr.shape, bool(jnp.all(jnp.diff(tr, axis=0) >= 0))
    ((5, 1), True)
  """
  _check_apgd("apgd_trace", logits_fn, x, y, eps, norm, num_steps, 1)
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}.")
  return _trace_impl(key, logits_fn, x, y, eps, norm=norm, num_steps=num_steps, loss=loss)


__all__ = ["LOSSES", "checkpoints", "dlr_loss", "dlr_targeted_loss", "apgd", "apgd_robust",
           "apgd_targeted", "apgd_targeted_robust", "apgd_trace"]
