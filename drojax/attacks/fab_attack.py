"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), untargeted or targeted (FAB-T),
in L-inf, L2 or L1.

Images are NHWC float in [0, 1]; the model meets the attack as ``logits_fn(x) -> [B, K]``.

FAB looks for the *smallest* perturbation that changes the class. From the current iterate
``x_k`` (the clean image ``x`` at the first step) each step:

* linearises the differences of logits ``f_j = z_j - z_y`` at ``x_k`` and picks the class
  whose linearised boundary is closest, ``|f_j| / ||grad f_j||_*`` (``||.||_*`` the dual
  norm); FAB-T uses the one target class of its pass instead;
* projects both ``x_k`` and ``x`` onto that hyperplane intersected with the box [0, 1]:
  ``d_1``, ``d_2`` are the smallest perturbations (in the attack's norm) with
  ``f + <grad f, x_k + d - x_k> = 0`` and ``0 <= x_k + d_1, x + d_2 <= 1``
  (:func:`project_hyperplane_box`);
* takes the biased step ``x_{k+1} = clip((1 - a)(x_k + eta d_1) + a (x + eta d_2), 0, 1)``
  with ``a = min(||d_1|| / (||d_1|| + ||d_2||), alpha_max)``, which leans towards the clean
  image's projection (a small perturbation) and overshoots the linearised boundary by
  ``eta``;
* if ``x_{k+1}`` is misclassified, keeps it when it is the closest so far and steps back
  towards the clean image, ``x_{k+1} <- x + beta (x_{k+1} - x)``, so the search hugs the
  boundary from the correct side.

A later restart starts from a random point at distance ``eps / 2``. The targeted version runs
one pass per target, the classes ranked 2nd to ``num_targets + 1``-th by the clean logits
(as APGD-T). The result per example is the closest misclassified point found over every pass;
it counts only if it lies within ``eps``.

Differences from the reference code (``fra31/auto-attack``'s ``fab_base.py``/``fab_pt.py``,
read for understanding only): where the hyperplane cannot be reached inside the box, the
projection returns the box corner that gets closest to it (the reference's choice there
differs and is not documented); the public functions run every pass on every example and
keep the closest point (the reference skips examples an earlier pass fooled within eps, as
the suite's internal call does: the verdicts are the same). The projections are sort based
and exact, in the input's precision.

All functions jit with ``logits_fn``, ``norm``, ``num_steps``, ``targeted``, ``num_targets``
and ``restarts`` static; ``eps``, ``alpha_max``, ``eta`` and ``beta`` are traced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from drojax._checks import check_static_int
from drojax.attacks import auto
from drojax.attacks.projected import LogitsFn, _TINY, _check_inputs, _check_number, count_classes

FAB_NORMS = ("linf", "l2", "l1")
_DIST_TINY = 1e-12  # added to the dual norm when ranking the boundaries (as the reference)
_STEP_TINY = 1e-8  # floor of ||d_1||, ||d_2|| in the bias a (as the reference)


def _flat(v):
  return v.reshape(v.shape[0], -1)


def _norm(d, norm):
  """Per-row norm of ``d [B, n]`` -> ``[B]``."""
  if norm == "linf":
    return jnp.max(jnp.abs(d), axis=-1)
  if norm == "l2":
    return jnp.sqrt(jnp.sum(d * d, axis=-1))
  return jnp.sum(jnp.abs(d), axis=-1)


def _dual_norm(g, norm):
  """Dual norm over the last axis: L1 for L-inf, L2 for L2, L-inf for L1."""
  return _norm(g.reshape(-1, g.shape[-1]), {"linf": "l1", "l2": "l2", "l1": "linf"}[norm]
               ).reshape(g.shape[:-1])


def _project_rows(w, c, x, norm):
  """Batched core of :func:`project_hyperplane_box` (``w, x [B, n]``, ``c [B]``)."""
  # Solve for c >= 0: flipping (w, c) leaves the constraint <w, d> = c unchanged.
  s = jnp.where(c >= 0, 1.0, -1.0).astype(w.dtype)
  w, c = w * s[:, None], (c * s)[:, None]
  sgn = jnp.sign(w)
  a = jnp.abs(w)
  # How far each coordinate can move in the direction that raises <w, d>.
  room = jnp.where(w > 0, 1.0 - x, jnp.where(w < 0, x, 0.0))
  if norm == "l1":
    # Cheapest progress first: fill coordinates by decreasing |w_i| up to their room.
    order = jnp.argsort(-a, axis=-1)
    a_s = jnp.take_along_axis(a, order, axis=-1)
    r_s = jnp.take_along_axis(room, order, axis=-1)
    gain = a_s * r_s
    before = jnp.cumsum(gain, axis=-1) - gain
    amount = jnp.where(a_s > 0, jnp.clip((c - before) / jnp.maximum(a_s, _TINY), 0.0, r_s), 0.0)
    rows = jnp.arange(w.shape[0])[:, None]
    return sgn * jnp.zeros_like(w).at[rows, order].set(amount)
  # L-inf: d_i = sgn_i min(t, room_i); L2: d_i = sgn_i |w_i| min(lam, room_i / |w_i|) (KKT).
  # Both: <w, d> = h(s) = sum_i v_i min(s, s_i), increasing and piecewise linear in s.
  if norm == "linf":
    v, brk = a, room
  else:
    v, brk = a * a, jnp.where(a > 0, room / jnp.maximum(a, _TINY), jnp.inf)
  order = jnp.argsort(brk, axis=-1)
  brk_s = jnp.take_along_axis(brk, order, axis=-1)
  v_s = jnp.take_along_axis(v, order, axis=-1)
  acc = jnp.cumsum(jnp.where(v_s > 0, v_s * brk_s, 0.0), axis=-1)  # saturated part
  slope = jnp.cumsum(v_s, axis=-1)
  total = slope[:, -1:]
  h = jnp.where(jnp.isfinite(brk_s), acc + brk_s * (total - slope), jnp.inf)
  k = jnp.sum(h < c, axis=-1, keepdims=True)  # coordinates saturated at the solution
  take = lambda m: jnp.where(k > 0, jnp.take_along_axis(m, jnp.maximum(k - 1, 0), axis=-1), 0.0)
  free = total - take(slope)
  # free == 0: the hyperplane lies beyond the box; saturate every useful coordinate.
  sol = jnp.where(free > 0, (c - take(acc)) / jnp.where(free > 0, free, 1.0), jnp.inf)
  if norm == "linf":
    return sgn * jnp.minimum(sol, brk)
  return jnp.where(a > 0, w * jnp.minimum(sol, brk), 0.0)


def project_hyperplane_box(w: jax.Array, c: jax.Array, x: jax.Array, *,
                           norm: str = "linf") -> jax.Array:
  """Per row, the smallest ``d`` in ``norm`` with ``<w, d> = c`` and ``0 <= x + d <= 1``.

  .. math:: d^* = \\arg\\min_d \\|d\\|_p \\ \\text{s.t.}\\ \\langle w, d \\rangle = c,\\
     -x \\le d \\le 1 - x

  Exact, by sorting: for L-inf ``d_i = sign(w_i c) min(t, room_i)``, for L2 ``d_i =
  clip(lam w_i, -x_i, 1 - x_i)``, for L1 the coordinates of largest ``|w_i|`` move first;
  ``t``, ``lam`` or the cut-off solve a piecewise-linear equation. Where the hyperplane is
  out of the box's reach, every coordinate moves to the bound that brings ``<w, d>``
  closest to ``c``.

  Args:
    w: normals ``[B, n]``.
    c: offsets ``[B]``.
    x: points ``[B, n]`` in [0, 1].
    norm: ``'linf'``, ``'l2'`` or ``'l1'`` (static).

  Returns:
    ``d [B, n]``.

  Example:
    >>> import jax.numpy as jnp
    >>> d = project_hyperplane_box(jnp.array([[1.0, 2.0]]), jnp.array([0.5]),
    ...                            jnp.array([[0.5, 0.9]]), norm="linf")
    >>> [round(float(v), 4) for v in d[0]]  # the 2nd coordinate stops at the box (0.1)
    [0.3, 0.1]
  """
  if norm not in FAB_NORMS:
    raise ValueError(f"norm must be one of {FAB_NORMS}; got {norm!r}.")
  w, x = jnp.asarray(w), jnp.asarray(x)
  if w.ndim != 2 or x.shape != w.shape or jnp.shape(c) != w.shape[:1]:
    raise ValueError(f"project_hyperplane_box: w and x must be [B, n] and c [B]; got "
                     f"{w.shape}, {jnp.shape(x)}, {jnp.shape(c)}.")
  return _project_rows(w, jnp.asarray(c, w.dtype), x, norm)


def _boundary(logits_fn, z, y, target, *, norm, targeted):
  """The closest linearised boundary at ``z``: ``(f [B], grad f [B, n])``, ``f = z_j - z_y``.

  FAB-T's boundary is its target's; untargeted FAB takes the class ``j != y`` with the
  smallest ``|f_j| / ||grad f_j||_*`` (K backward passes).
  """
  b = z.shape[0]
  if targeted:
    def diff(v):
      logits = logits_fn(v).astype(jnp.float32)
      f = (jnp.take_along_axis(logits, target[:, None], axis=-1)
           - jnp.take_along_axis(logits, y[:, None], axis=-1))[:, 0]
      return jnp.sum(f), f
    (_, f), g = jax.value_and_grad(diff, has_aux=True)(z)
    return f, _flat(g)
  logits, vjp = jax.vjp(lambda v: logits_fn(v).astype(jnp.float32), z)
  k = logits.shape[-1]
  jac = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, logits.shape))[0])(jnp.eye(k))
  jac = jnp.moveaxis(jac.reshape(k, b, -1), 0, 1)  # [B, K, n]
  df = logits - jnp.take_along_axis(logits, y[:, None], axis=-1)
  dg = jac - jnp.take_along_axis(jac, y[:, None, None], axis=1)
  dist = jnp.abs(df) / (_dual_norm(dg, norm) + _DIST_TINY)
  dist = jnp.where(jax.nn.one_hot(y, k, dtype=bool), jnp.inf, dist)
  j = jnp.argmin(dist, axis=-1)
  return (jnp.take_along_axis(df, j[:, None], axis=-1)[:, 0],
          jnp.take_along_axis(dg, j[:, None, None], axis=1)[:, 0])


def _random_start(key, x, eps, norm):
  """A random point at distance ``eps / 2`` from ``x`` in ``norm`` (before clipping)."""
  if norm == "linf":
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
  t = t / jnp.maximum(_norm(_flat(t), norm), _TINY)[:, None, None, None]
  return jnp.clip(x + 0.5 * eps * t, 0.0, 1.0)


def _fab_single(key, logits_fn, x, y, target, eps, active, random_start, alpha_max, eta, beta,
                *, norm, num_steps, targeted, early_stop):
  """One FAB pass. Returns ``(x_best [B, H, W, C], dist_best [B])`` (inf: none found)."""
  shape = x.shape
  x0 = _flat(x)
  start = _flat(jnp.where(random_start, _random_start(key, x, eps, norm), x))

  def body(s):
    i, x1, x_best, d_best = s
    f, w = _boundary(logits_fn, x1.reshape(shape), y, target, norm=norm, targeted=targeted)
    # The linearised boundary {z : f + <w, z - x1> = 0}, reached from x1 and from x0.
    d1 = _project_rows(w, -f, x1, norm)
    d2 = _project_rows(w, -f + jnp.sum(w * (x1 - x0), axis=-1), x0, norm)
    a1 = jnp.maximum(_norm(d1, norm), _STEP_TINY)
    a2 = jnp.maximum(_norm(d2, norm), _STEP_TINY)
    a = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x_new = jnp.clip((1 - a) * (x1 + eta * d1) + a * (x0 + eta * d2), 0.0, 1.0)
    adv = jnp.argmax(logits_fn(x_new.reshape(shape)), axis=-1) != y
    dist = _norm(x_new - x0, norm)
    better = adv & (dist < d_best)
    x_best = jnp.where(better[:, None], x_new, x_best)
    d_best = jnp.where(better, dist, d_best)
    x1 = jnp.where(adv[:, None], x0 + beta * (x_new - x0), x_new)
    return i + 1, x1, x_best, d_best

  def cond(s):
    go = s[0] < num_steps
    if early_stop:
      go = go & jnp.any(active & ~(s[3] <= eps))
    return go

  init = (jnp.int32(0), start, x0, jnp.full((shape[0],), jnp.inf, x.dtype))
  _, _, x_best, d_best = jax.lax.while_loop(cond, body, init)
  return x_best.reshape(shape), d_best


def _fab_runs(key, logits_fn, x, y, eps, active, alpha_max, eta, beta, *, norm, num_steps,
              targeted, num_targets, restarts, minimal):
  """Every pass (targets x restarts) of FAB: ``(x_adv, robust [B], dist [B])``.

  ``x_adv`` is the closest misclassified point found where it lies within ``eps``, else ``x``;
  ``robust`` is clean-correct and not fooled within eps; ``dist`` the closest distance found
  (0 for clean-misclassified rows, inf where none). With ``minimal`` False, a pass and the
  loop over passes stop once every ``active`` row is fooled within eps (same verdicts).
  """
  eps = jnp.asarray(eps, x.dtype)
  y = y.astype(jnp.int32)
  clean_ok = jnp.argmax(logits_fn(x), axis=-1) == y
  active = active & clean_ok
  if targeted:
    targets = auto._targets(logits_fn, x, num_targets)
  else:
    targets = jnp.zeros((1, x.shape[0]), jnp.int32)
  total = targets.shape[0] * restarts

  def body(s):
    r, x_best, d_best = s
    fooled = d_best <= eps
    xb, db = _fab_single(jax.random.fold_in(key, r), logits_fn, x, y, targets[r // restarts],
                         eps, active & ~fooled, (r % restarts) > 0, alpha_max, eta, beta,
                         norm=norm, num_steps=num_steps, targeted=targeted,
                         early_stop=not minimal)
    better = db < d_best
    if not minimal:
      better = better & ~fooled
    return (r + 1, jnp.where(better[:, None, None, None], xb, x_best),
            jnp.where(better, db, d_best))

  def cond(s):
    go = s[0] < total
    if not minimal:
      go = go & jnp.any(active & ~(s[2] <= eps))
    return go

  init = (jnp.int32(0), x, jnp.full((x.shape[0],), jnp.inf, x.dtype))
  _, x_best, d_best = jax.lax.while_loop(cond, body, init)
  d_best = jnp.where(clean_ok, d_best, 0.0)
  fooled = clean_ok & (d_best <= eps)
  return jnp.where(fooled[:, None, None, None], x_best, x), clean_ok & ~fooled, d_best


_STATIC = ("logits_fn", "norm", "num_steps", "targeted", "num_targets", "restarts", "minimal")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fab_impl(key, logits_fn, x, y, eps, alpha_max, eta, beta, *, norm, num_steps, targeted,
              num_targets, restarts, minimal):
  return _fab_runs(key, logits_fn, x, y, eps, jnp.ones(x.shape[0], bool), alpha_max, eta, beta,
                   norm=norm, num_steps=num_steps, targeted=targeted, num_targets=num_targets,
                   restarts=restarts, minimal=minimal)


def check_fab_options(*, eps, norm, num_steps, targeted, num_targets, restarts, alpha_max, eta,
                      beta, num_classes: int | None = None) -> None:
  """Raises a ValueError naming the first bad FAB option (shared with the suite).

  Args:
    eps, norm, num_steps, targeted, num_targets, restarts, alpha_max, eta, beta: as
      :func:`fab_robust` (``eps`` None: not checked).
    num_classes: the model's K (None: the K checks are skipped).

  Returns:
    None.

  Example:
    >>> check_fab_options(eps=0.1, norm="linf", num_steps=10, targeted=True, num_targets=9,
    ...                   restarts=1, alpha_max=0.1, eta=0.5, beta=0.9)
    Traceback (most recent call last):
    ...
    ValueError: eta must be >= 1 (the step overshoots the boundary); got 0.5.
  """
  if eps is not None:
    _check_number(eps, "eps")
  if norm not in FAB_NORMS:
    raise ValueError(f"norm must be one of {FAB_NORMS}; got {norm!r}.")
  check_static_int("num_steps", num_steps, minimum=1)
  check_static_int("restarts", restarts, minimum=1)
  if not isinstance(targeted, bool):
    raise TypeError(f"targeted must be a bool; got {targeted!r}.")
  if targeted:
    check_static_int("num_targets", num_targets, minimum=1)
  for name, value, lo, hi in (("alpha_max", alpha_max, 0.0, 1.0), ("beta", beta, 0.0, 1.0)):
    if isinstance(value, jax.core.Tracer):
      continue
    _check_real(value, name)
    if not lo <= float(value) <= hi or (name == "beta" and float(value) in (0.0, 1.0)):
      span = "(0, 1)" if name == "beta" else "[0, 1]"
      raise ValueError(f"{name} must be in {span}; got {value!r}.")
  if not isinstance(eta, jax.core.Tracer):
    _check_real(eta, "eta")
    if not float(eta) >= 1.0:
      raise ValueError(f"eta must be >= 1 (the step overshoots the boundary); got {eta!r}.")
  if num_classes is not None:
    if num_classes < 2:
      raise ValueError(f"fab needs at least 2 classes; logits_fn returns {num_classes}.")
    if targeted and num_targets > num_classes - 1:
      raise ValueError(f"num_targets must be <= K - 1 = {num_classes - 1} (the non-true "
                       f"classes); got {num_targets}.")


def _check_real(value, name):
  try:
    float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{name} must be a real number; got {type(value).__name__}.") from None


def fab_robust(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
               eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
               targeted: bool = False, num_targets: int = 9, restarts: int = 1,
               alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9
               ) -> tuple[jax.Array, jax.Array]:
  """FAB (or FAB-T); returns the closest points found within eps and the robust verdicts.

  Args:
    key: PRNG key (pass ``r`` of target ``t`` uses ``fold_in(key, t * restarts + r)``; only
      restarts after the first draw from it).
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode (static); K >= 2.
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: budget in ``norm``, pixel units, >= 0 (traced): a point counts only within it.
    norm: ``'linf'``, ``'l2'`` or ``'l1'`` (static): the distance FAB minimises.
    num_steps: iterations per pass, >= 1.
    targeted: FAB-T, one pass per target class, instead of the closest boundary of all K.
    num_targets: FAB-T's targets, the 2nd to ``num_targets + 1``-th classes by clean logit,
      ``1 <= num_targets <= K - 1`` (unused when ``targeted`` is False).
    restarts: passes per target (untargeted: passes), >= 1; the first starts at ``x``,
      the others at a random point at distance ``eps / 2``.
    alpha_max: the largest bias towards the clean image's projection, in [0, 1].
    eta: overshoot of the linearised boundary, >= 1.
    beta: the step back towards ``x`` after a misclassified iterate, in (0, 1).

  Returns:
    ``(x_adv [B, H, W, C], robust [B] bool)``: ``x_adv`` is, per example, the closest
    misclassified point found over every pass if it lies within ``eps``, else ``x``;
    ``robust`` is clean-correct and not fooled within ``eps``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: jnp.stack([z.mean((1, 2, 3)), 0.5 - z.mean((1, 2, 3))], -1)
    >>> x = jnp.array([0.9, 0.2]).reshape(2, 1, 1, 1)  # distances to the boundary .65, .05
    >>> x_adv, robust = fab_robust(jax.random.key(0), f, x, jnp.array([0, 1]), eps=0.3,
    ...                            num_steps=10)
    >>> robust.tolist(), round(float(x_adv[1, 0, 0, 0]), 2)
    ([True, False], 0.25)
  """
  _check_inputs(x, y, "fab", logits_fn)
  if not callable(logits_fn):
    raise TypeError(f"fab: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")
  check_fab_options(eps=eps, norm=norm, num_steps=num_steps, targeted=targeted,
                    num_targets=num_targets, restarts=restarts, alpha_max=alpha_max, eta=eta,
                    beta=beta, num_classes=count_classes(logits_fn, x))
  x_adv, robust, _ = _fab_impl(key, logits_fn, x, y, eps, jnp.float32(alpha_max),
                               jnp.float32(eta), jnp.float32(beta), norm=norm,
                               num_steps=num_steps, targeted=targeted,
                               num_targets=num_targets if targeted else 0, restarts=restarts,
                               minimal=True)
  return x_adv, robust


def fab(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
        eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
        targeted: bool = False, num_targets: int = 9, restarts: int = 1,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> jax.Array:
  """FAB (or FAB-T); returns the per-example closest misclassified point found within eps.

  Every returned point lies in the eps-ball around ``x`` and in [0, 1]; an example FAB did
  not fool within ``eps`` comes back as ``x``.

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, targeted, num_targets, restarts, alpha_max,
      eta, beta: as :func:`fab_robust`.

  Returns:
    ``x_adv [B, H, W, C]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -1.0, 0.0, 0.0])
    >>> f = lambda z: z.mean((1, 2, 3))[:, None] * w[None] + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = jnp.full((1, 2, 2, 1), 0.3)  # class 0 leads class 1 by 0.1: 0.05 away in L-inf
    >>> x_adv = fab(jax.random.key(0), f, x, jnp.array([0]), eps=0.1, num_steps=20,
    ...             targeted=True, num_targets=3)
    >>> round(float(jnp.abs(x_adv - x).max()), 3)
    0.05
  """
  return fab_robust(key, logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps,
                    targeted=targeted, num_targets=num_targets, restarts=restarts,
                    alpha_max=alpha_max, eta=eta, beta=beta)[0]


__all__ = ["FAB_NORMS", "project_hyperplane_box", "check_fab_options", "fab_robust", "fab"]
