"""FGSM and PGD (L-inf and L2, random start, restarts), and the checks and projections every
attack in :mod:`drojax.attacks` shares.

Images are NHWC float32 in [0, 1]; concrete images outside it (e.g. 0..255) are a ValueError
(under ``jit`` the values are not visible and the check is skipped). A model meets an attack as
``logits_fn(x) -> [B, K]``, a closure over its variables in eval mode, so the attack never
touches Flax state. Every attack perturbs the *pixels* (not normalized inputs: normalization
lives inside the model), keeps ``||x_adv - x|| <= eps`` in the chosen norm and clips ``x_adv``
to [0, 1].

The loss an attack ascends is the per-example softmax cross-entropy with integer labels; the
gradient taken is that of the *summed* loss, so each example's step depends only on its own
loss as long as ``logits_fn`` treats examples independently (eval-mode BatchNorm does).

Loop form (``unroll``): on this project's 2-core CPU, PGD with ``lax.fori_loop`` ran 3.5x
(20 steps) to 5.5x (10 steps) slower than the same loop unrolled in Python inside ``jit``, on
a small CNN at batch 128 (``benchmarks/attacks.py``, ``docs/benchmarks.md``). Unrolling costs
compile time that grows with ``num_steps`` (13.6 s vs 8.8 s at 20 steps there). No
accelerator was available to measure, so ``unroll=None`` picks unrolled on CPU only and the
compact ``lax.fori_loop`` elsewhere; pass ``unroll`` explicitly to override (and run the
benchmark on your backend to choose).

All public functions are jitted: ``logits_fn`` and the shape/branch options are static, the
numbers ``eps`` and ``step_size`` are traced (changing them does not recompile). Calling an
attack eagerly with a closure over concrete parameters bakes the parameters into the
compiled program as constants and compiles once per closure object; for repeated use, call
the attack inside your own ``jax.jit`` that takes the variables as arguments (as
``drojax.evaluate`` does), where the inner ``jit`` is simply inlined.

References: Goodfellow et al., 2015 (FGSM); Madry et al., 2018 (PGD); robust accuracy as in
torchattacks/foolbox (an example counts as robust only if no restart fools the model).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from drojax import losses as _losses
from drojax._checks import check_labels, check_static_int, check_unit_range, is_concrete, renamed

LogitsFn = Callable[[jax.Array], jax.Array]

NORMS = ("linf", "l2")
START_MODES = ("uniform", "normal", "none")
_NORMAL_START_SCALE = 0.001  # TRADES' and MART's x + 0.001 * randn start

# Below this a gradient norm is treated as zero (L2 steps divide by it).
_TINY = 1e-12


def _check_inputs(x, y, name: str, logits_fn=None) -> None:
  """Validates ``x`` [B, H, W, C] floating and ``y`` [B] integer (trace-time checks); with
  ``logits_fn``, also that concrete ``y`` lies in [0, K) for the model's K outputs."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(f"{name}: x must be an array [B, H, W, C]; got {type(x).__name__}.")
  if x.ndim != 4:
    raise ValueError(f"{name}: x must have rank 4 [B, H, W, C] (NHWC); got shape {tuple(x.shape)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{name}: x must be floating point in [0, 1]; got dtype {x.dtype}. "
        "Convert uint8 images with x.astype(jnp.float32) / 255.")
  check_unit_range(f"{name}: x", x)
  if not hasattr(y, "shape") or y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise ValueError(
        f"{name}: y must be integer labels of shape [B] = [{x.shape[0]}]; "
        f"got shape {tuple(getattr(y, 'shape', ()))}.")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"{name}: y must be integer class labels; got dtype {y.dtype}.")
  if callable(logits_fn) and is_concrete(y):
    check_labels(f"{name}: y", y, count_classes(logits_fn, x))


def _labels_valid(y: jax.Array, num_classes: int) -> jax.Array:
  """``[B]`` bool: which labels lie in [0, K). Traced labels cannot be refused, so a loss or
  an accuracy becomes NaN where this is False, never a finite number."""
  return (y >= 0) & (y < num_classes)


def _check_number(value, argname: str, *, positive: bool = False) -> None:
  """Rejects negative (or non-positive) Python numbers; traced values pass through."""
  if isinstance(value, jax.core.Tracer):
    return
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{argname} must be a real number; got {type(value).__name__}.") from None
  if v != v or v < 0 or (positive and v == 0):
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"{argname} must be {bound}; got {value!r}.")


def check_pgd_options(*, norm: str, num_steps: int, restarts: int) -> None:
  """Raises a ValueError naming the first bad PGD option.

  Args:
    norm: ``'linf'`` or ``'l2'``.
    num_steps: an int >= 0.
    restarts: an int >= 1.

  Returns:
    None.

  Example:
    >>> check_pgd_options(norm="l1", num_steps=10, restarts=1)
    Traceback (most recent call last):
    ...
    ValueError: norm must be one of ('linf', 'l2'); got 'l1'.
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}.")
  check_static_int("num_steps", num_steps, minimum=0)
  check_static_int("restarts", restarts, minimum=1)


def count_classes(logits_fn: LogitsFn, x: jax.Array) -> int:
  """The number of classes ``K`` that ``logits_fn`` returns for inputs shaped like ``x``.

  Nothing is computed: the shape comes from :func:`jax.eval_shape`.

  Args:
    logits_fn: ``x [B, H, W, C] -> logits [B, K]``.
    x: an array (or ``jax.ShapeDtypeStruct``) of the input's shape and dtype.

  Returns:
    ``K``.

  Example:
    >>> import jax.numpy as jnp
    >>> count_classes(lambda z: jnp.zeros((z.shape[0], 7)), jnp.zeros((2, 4, 4, 3)))
    7
  """
  return jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]


def default_unroll(backend: str | None = None) -> bool:
  """Whether PGD unrolls its step loop by default on ``backend``.

  True on CPU, where an unrolled loop measured 3.5-5.5x faster than ``lax.fori_loop``
  (``benchmarks/attacks.py``); False elsewhere (compact loop, faster compile; unmeasured).

  Args:
    backend: ``'cpu'``, ``'gpu'``, ``'tpu'``...; None means ``jax.default_backend()``.

  Returns:
    True to unroll.

  Example:
    >>> default_unroll("cpu"), default_unroll("gpu")
    (True, False)
  """
  return (backend or jax.default_backend()) == "cpu"


def per_example_loss(logits_fn: LogitsFn, x: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy of ``logits_fn(x)`` against integer labels ``y``: the attacks' loss.

  .. math:: \\ell_i = \\log \\sum_k e^{z_{ik}} - z_{i, y_i}

  Args:
    logits_fn: ``x [B, H, W, C] -> logits [B, K]``.
    x: images ``[B, H, W, C]``.
    y: integer labels ``[B]`` in [0, K) (checked when concrete; NaN loss under ``jit``).

  Returns:
    Per-example losses ``[B]`` float32.

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda z: jnp.zeros((z.shape[0], 4))
    >>> losses = per_example_loss(f, jnp.zeros((2, 1, 1, 1)), jnp.array([0, 3]))
    >>> [round(float(v), 4) for v in losses]
    [1.3863, 1.3863]
  """
  logits = logits_fn(x)
  check_labels("y", y, logits.shape[-1])
  return _losses.cross_entropy(logits.astype(jnp.float32), y.astype(jnp.int32))


def _input_grad(logits_fn: LogitsFn, x: jax.Array, y: jax.Array) -> jax.Array:
  return jax.grad(lambda z: jnp.sum(per_example_loss(logits_fn, z, y)))(x)


def _l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm over all non-batch axes, shaped [B, 1, 1, 1] for broadcasting."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2, 3), keepdims=True))


def _project(x_adv: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
  """Projects ``x_adv`` onto the ``eps``-ball around ``x`` intersected with [0, 1]."""
  # Clipping each pixel to [0, 1] only moves it towards x (x is in [0, 1]), so it never
  # leaves the ball: |clip(x + d) - x| <= |d| coordinate-wise.
  if norm == "linf":
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_l2_norm(delta), _TINY))
  return jnp.clip(x + delta, 0.0, 1.0)


def _random_start(key: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
  """A uniform draw from the ``eps``-ball around ``x`` (clipped to [0, 1])."""
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  else:
    # Uniform in the L2 ball: a uniform direction times a radius eps * U^(1/d).
    kdir, krad = jax.random.split(key)
    direction = jax.random.normal(kdir, x.shape, x.dtype)
    direction = direction / jnp.maximum(_l2_norm(direction), _TINY)
    d = x[0].size
    radius = eps * jax.random.uniform(krad, (x.shape[0], 1, 1, 1), x.dtype) ** (1.0 / d)
    delta = direction * radius
  return jnp.clip(x + delta, 0.0, 1.0)


def projected_ascent(key: jax.Array | None, loss_fn: Callable[[jax.Array], jax.Array],
                     x: jax.Array, *, eps: float | jax.Array, step_size: float | jax.Array,
                     num_steps: int, norm: str = "linf", start: str = "uniform",
                     unroll: bool | None = None) -> jax.Array:
  r"""Projected gradient ascent of :math:`\sum_i \ell_i(x')` over the ``eps``-ball around ``x``
  intersected with [0, 1]: the one loop behind :func:`pgd` and the adversarial objectives.

  .. math:: x^{t+1} = \Pi_{B_\epsilon(x) \cap [0,1]^d}\big(x^t + \alpha\, s(\nabla_{x^t}
            \textstyle\sum_i \ell_i(x^t))\big), \quad s(g) = \mathrm{sign}(g) \text{ (linf)},
            \; g / \|g\|_2 \text{ (l2, per example)}

  Unchecked (the callers check); differentiable through the loop unless the caller stops it.

  Args:
    key: PRNG key of the start (unused, may be None, with ``start="none"``).
    loss_fn: ``x' [B, ...] -> [B]`` per-example losses to maximize (a closure over the model).
    x: ``[B, H, W, C]`` float images in [0, 1] (L-inf: any ``[B, ...]``, e.g. with views).
    eps: radius ``>= 0`` in pixel units (traced).
    step_size: ``alpha >= 0`` (traced).
    num_steps: steps, ``>= 0`` (static).
    norm: ``'linf'`` or ``'l2'`` (static).
    start: ``'uniform'`` (uniform in the ball, clipped to [0, 1]; L2: uniform direction, radius
      ``eps * U^(1/d)``), ``'normal'`` (``x + 0.001 N(0, I)`` as TRADES and MART, projected
      by the first step) or ``'none'`` (static).
    unroll: unroll the steps in Python (True) or run ``lax.fori_loop`` (False); None picks per
      backend with :func:`default_unroll` (static).

  Returns:
    ``x_adv`` shaped like ``x``; after at least one step ``||x_adv - x|| <= eps`` and in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.full((1, 1, 1, 3), 0.5)
    >>> adv = projected_ascent(None, lambda z: z.sum((1, 2, 3)), x, eps=0.1, step_size=0.05,
    ...                        num_steps=3, start="none")
    >>> [round(float(v), 4) for v in adv.ravel()]
    [0.6, 0.6, 0.6]
  """
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)
  if start == "uniform":
    z = _random_start(key, x, eps, norm)
  elif start == "normal":
    z = x + _NORMAL_START_SCALE * jax.random.normal(key, x.shape, x.dtype)
  elif start == "none":
    z = x
  else:
    raise ValueError(f"start must be one of {START_MODES}; got {start!r}.")

  def step(_, z):
    g = jax.grad(lambda z_: jnp.sum(loss_fn(z_)))(z)
    if norm == "linf":
      z = z + step_size * jnp.sign(g)
    else:
      z = z + step_size * g / jnp.maximum(_l2_norm(g), _TINY)
    return _project(z, x, eps, norm)

  if _resolve_unroll(unroll):
    for i in range(num_steps):
      z = step(i, z)
    return z
  return jax.lax.fori_loop(0, num_steps, step, z)


def _pgd_single(key, logits_fn, x, y, eps, step_size, *, norm, num_steps, start, unroll):
  return projected_ascent(key, lambda z: per_example_loss(logits_fn, z, y), x, eps=eps,
                          step_size=step_size, num_steps=num_steps, norm=norm, start=start,
                          unroll=unroll)


def _fooled(logits_fn, x_adv, y):
  return jnp.argmax(logits_fn(x_adv), axis=-1) != y


_STATIC = ("logits_fn", "norm", "num_steps", "start", "restarts", "unroll")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _pgd_impl(key, logits_fn, x, y, eps, step_size, *, norm, num_steps, start, restarts,
              unroll):
  """Returns (x_adv [B, H, W, C], robust [B] bool)."""
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)
  y = y.astype(jnp.int32)
  run = functools.partial(
      _pgd_single, logits_fn=logits_fn, x=x, y=y, eps=eps, step_size=step_size, norm=norm,
      num_steps=num_steps, start=start, unroll=unroll)
  clean_correct = jnp.logical_not(_fooled(logits_fn, x, y))
  x_adv = run(jax.random.fold_in(key, 0))
  fooled = _fooled(logits_fn, x_adv, y)
  if restarts > 1:
    # One compiled restart body scanned over the remaining keys: an example keeps the first
    # restart that fools the model, else takes the newest (ending with the last restart).
    def body(carry, r):
      best, any_fooled = carry
      cand = run(jax.random.fold_in(key, r))
      cand_fooled = _fooled(logits_fn, cand, y)
      best = jnp.where(any_fooled[:, None, None, None], best, cand)
      return (best, any_fooled | cand_fooled), None

    (x_adv, fooled), _ = jax.lax.scan(body, (x_adv, fooled), jnp.arange(1, restarts))
  return x_adv, clean_correct & jnp.logical_not(fooled)


def _resolve_unroll(unroll: bool | None) -> bool:
  return default_unroll() if unroll is None else bool(unroll)


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float | jax.Array) -> jax.Array:
  """Fast gradient sign method: one L-inf step of size ``eps`` up the loss.

  .. math:: x_{adv} = \\mathrm{clip}_{[0,1]}\\big(x + \\epsilon\\,
            \\mathrm{sign}(\\nabla_x \\ell(f(x), y))\\big)

  Args:
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` (static: a new closure recompiles).
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: L-inf budget in pixel units (e.g. ``8 / 255``), >= 0; traced.

  Returns:
    Adversarial images, same shape and dtype as ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)
    >>> x_adv = fgsm(f, jnp.full((1, 2, 2, 1), 0.5), jnp.array([0]), eps=0.1)
    >>> print(round(float(x_adv[0, 0, 0, 0]), 6))
    0.4
  """
  _check_inputs(x, y, "fgsm", logits_fn)
  _check_number(eps, "eps")
  if not callable(logits_fn):
    raise TypeError(f"fgsm: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")
  return _fgsm_impl(logits_fn, x, y, eps)


@functools.partial(jax.jit, static_argnames=("logits_fn",))
def _fgsm_impl(logits_fn, x, y, eps):
  eps = jnp.asarray(eps, x.dtype)
  g = _input_grad(logits_fn, x, y.astype(jnp.int32))
  return jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0)


@renamed(random_start="start")
def pgd(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
        eps: float | jax.Array, step_size: float | jax.Array, num_steps: int,
        norm: str = "linf", start: str = "uniform", restarts: int = 1,
        unroll: bool | None = None) -> jax.Array:
  """Projected gradient descent (ascent on the loss) in pixel space.

  Each step moves up the cross-entropy and projects back:

  .. math:: x^{t+1} = \\Pi_{B_\\epsilon(x) \\cap [0,1]^d}\\big(x^t + \\alpha\\, s(\\nabla_x
            \\ell(f(x^t), y))\\big), \\quad s(g) = \\mathrm{sign}(g) \\text{ (linf)},\\;
            g / \\|g\\|_2 \\text{ (l2)}

  With ``start='uniform'`` the first iterate is uniform in the ball (L2: uniform direction,
  radius ``eps * U^(1/d)``). With ``restarts > 1`` each restart draws a fresh start from
  ``fold_in(key, r)``; per example the result is the first restart whose final iterate the
  model misclassifies, else the last restart's.

  Args:
    key: PRNG key for the random starts.
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode (static).
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: budget in pixel units, >= 0 (traced).
    step_size: step ``alpha`` per iteration, >= 0 (traced); e.g. ``eps / 4``.
    num_steps: number of steps (static).
    norm: ``'linf'`` or ``'l2'`` (static).
    start: ``'uniform'`` (a uniform draw in the ball), ``'normal'`` (``x + 0.001 N(0, I)``)
      or ``'none'`` (static; see :func:`projected_ascent`).
    restarts: number of random restarts, >= 1 (static).
    unroll: unroll the step loop in Python (True) or use ``lax.fori_loop`` (False); None
      picks per backend with :func:`default_unroll` (static).

  Returns:
    Adversarial images ``[B, H, W, C]`` with ``||x_adv - x|| <= eps`` and values in [0, 1].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)
    >>> x = jnp.full((2, 4, 4, 3), 0.5)
    >>> x_adv = pgd(jax.random.key(0), f, x, jnp.array([0, 1]), eps=8 / 255,
    ...             step_size=2 / 255, num_steps=5)
    >>> bool(jnp.abs(x_adv - x).max() <= 8 / 255 + 1e-6)
    True
  """
  x_adv, _ = _run(key, logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                  norm=norm, start=start, restarts=restarts, unroll=unroll,
                  name="pgd")
  return x_adv


def _run(key, logits_fn, x, y, *, eps, step_size, num_steps, norm, start, restarts, unroll,
         name):
  _check_inputs(x, y, name, logits_fn)
  _check_number(eps, "eps")
  _check_number(step_size, "step_size")
  check_pgd_options(norm=norm, num_steps=num_steps, restarts=restarts)
  if start not in START_MODES:
    raise ValueError(f"start must be one of {START_MODES}; got {start!r}.")
  if not callable(logits_fn):
    raise TypeError(f"{name}: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")
  return _pgd_impl(key, logits_fn, x, y, eps, step_size, norm=norm, num_steps=num_steps,
                   start=start, restarts=restarts,
                   unroll=_resolve_unroll(unroll))


@renamed(random_start="start")
def pgd_robust(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
               eps: float | jax.Array, step_size: float | jax.Array, num_steps: int,
               norm: str = "linf", start: str = "uniform", restarts: int = 1,
               unroll: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs :func:`pgd` and says, per example, whether the model withstood every restart.

  An example is robust iff the model classifies the clean ``x_i`` correctly and the final
  iterate of *every* restart correctly.

  Args:
    key, logits_fn, x, y, eps, step_size, num_steps, norm, start, restarts, unroll:
      as :func:`pgd`.

  Returns:
    ``(x_adv [B, H, W, C], robust [B] bool)``; ``x_adv`` as returned by :func:`pgd`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), 0.5 - z.mean((1, 2, 3))], -1)
    >>> x = jnp.array([0.9, 0.3]).reshape(2, 1, 1, 1)  # margins 0.8 and 0.4 (class 0, 1)
    >>> _, robust = pgd_robust(jax.random.key(0), f, x, jnp.array([0, 1]), eps=0.3,
    ...                        step_size=0.1, num_steps=5)
    >>> robust.tolist()  # a shift of 0.3 moves the margin by 0.6
    [True, False]
  """
  return _run(key, logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
              norm=norm, start=start, restarts=restarts, unroll=unroll,
              name="pgd_robust")


@renamed(random_start="start")
def robust_accuracy(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                    eps: float | jax.Array, step_size: float | jax.Array, num_steps: int,
                    norm: str = "linf", start: str = "uniform", restarts: int = 1,
                    unroll: bool | None = None) -> jax.Array:
  """Fraction of examples that no PGD restart fools (and that are clean-correct).

  Args:
    key, logits_fn, x, y, eps, step_size, num_steps, norm, start, restarts, unroll:
      as :func:`pgd`.

  Returns:
    Robust accuracy, a float32 scalar ``[]`` in [0, 1]; NaN under ``jit`` when a label lies
    outside [0, K) (a ValueError when the labels are concrete).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> const = lambda z: jnp.zeros((z.shape[0], 3)).at[:, 1].set(1.0)  # ignores its input
    >>> acc = robust_accuracy(jax.random.key(0), const, jnp.zeros((4, 2, 2, 1)),
    ...                       jnp.array([1, 1, 1, 1]), eps=0.5, step_size=0.1, num_steps=3)
    >>> float(acc)
    1.0
  """
  _, robust = pgd_robust(key, logits_fn, x, y, eps=eps, step_size=step_size,
                         num_steps=num_steps, norm=norm, start=start,
                         restarts=restarts, unroll=unroll)
  valid = jnp.all(_labels_valid(y, count_classes(logits_fn, x)))
  return jnp.where(valid, jnp.mean(robust.astype(jnp.float32)), jnp.nan)


__all__ = ["NORMS", "START_MODES", "projected_ascent", "count_classes", "default_unroll",
           "per_example_loss", "fgsm", "pgd", "pgd_robust", "robust_accuracy"]
