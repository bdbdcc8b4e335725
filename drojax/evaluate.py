"""Evaluation: clean, corrupted (CIFAR-C, generated or published), adversarial and group accuracy.

Every function takes a model as ``logits_fn`` and host arrays (NumPy), batches them (the last
batch is padded to the batch size so nothing recompiles), shows a tqdm progress bar and
returns plain Python numbers and dicts ready for :func:`experiments.reporting.write_results`.

A model is either

* any callable ``logits_fn(x [B, H, W, C] float32 in [0, 1]) -> [B, K]`` (eval mode); it is
  wrapped in ``jax.jit`` (closed-over parameters become compile-time constants), or
* a :class:`BoundModel` ``(apply_fn, variables)``: ``apply_fn(variables, x)`` is jitted with the
  variables as *arguments*, the better choice for real models (no constant folding of
  millions of parameters, one compilation reused across batches, corruptions and eps).

Images arrive as uint8 NHWC (divided by 255) or float NHWC in [0, 1]; the library works in
float32 [0, 1].

Protocols:

* Corruptions (RobustBench / Hendrycks & Dietterich): accuracy per corruption x severity; the
  headline ``mean_corruption_accuracy`` is the mean over the 15 standard corruptions x 5
  severities (over those evaluated, if a subset is asked for); the 4 extras are averaged
  separately into ``extra_corruption_accuracy``. Generated corruptions use
  :func:`drojax.corruptions.corrupt` with a fixed evaluation key (:func:`eval_key`) folded with
  the corruption, the severity and the batch index, so a result is reproducible for a given
  batch size. Frost uses the procedural texture unless a folder of frost photographs is given
  (``frost_dir``; recorded in the results as ``frost_textures``).
* Adversarial: PGD (:mod:`drojax.attacks`) at each eps; an example counts as robust only if
  it is classified correctly clean and under every restart.
* Groups (Waterbirds, Sagawa et al. 2020): accuracy per group, the worst group, and the
  average of the group accuracies weighted by the *training* group proportions.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from drojax import attacks

EVAL_SEED = 20190  # the fixed seed of every evaluation key (corruptions and attack starts)

# Corruption families for reports and plots (Hendrycks & Dietterich's grouping; the extras go
# to the family they belong to).
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
SEVERITIES = (1, 2, 3, 4, 5)


def _names():
  from drojax.corruptions import tables  # light: no JAX compile, only tuples

  return tables.NAMES, tables.STANDARD_NAMES, tables.EXTRA_NAMES


def eval_key(seed: int = EVAL_SEED) -> jax.Array:
  """The fixed PRNG key of an evaluation (same seed -> same corrupted images and attacks).

  Args:
    seed: the evaluation seed (default :data:`EVAL_SEED`).

  Returns:
    A typed PRNG key.

  Example:
    >>> bool((jax.random.key_data(eval_key()) == jax.random.key_data(eval_key())).all())
    True
  """
  return jax.random.key(seed)


class BoundModel(NamedTuple):
  """A model as a pure function and its variables: ``logits = apply_fn(variables, x)``.

  Example:
    >>> import jax.numpy as jnp
    >>> m = BoundModel(lambda v, x: x.reshape(x.shape[0], -1) @ v, jnp.ones((4, 2)))
    >>> m(jnp.ones((3, 2, 2, 1))).shape
    (3, 2)
  """

  apply_fn: Callable[[Any, jax.Array], jax.Array]
  variables: Any

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.apply_fn(self.variables, x)


Model = Callable[[jax.Array], jax.Array] | BoundModel


# ------------------------------------------------------------------------------- plumbing


def _check_arrays(images: Any, labels: Any | None, fn: str) -> tuple[np.ndarray, np.ndarray | None]:
  if not hasattr(images, "shape") or len(images.shape) != 4:
    raise ValueError(f"{fn}: images must be an array [N, H, W, C]; got "
                     f"{getattr(images, 'shape', type(images).__name__)}.")
  dt = np.dtype(images.dtype)
  if dt != np.uint8 and not np.issubdtype(dt, np.floating):
    raise TypeError(f"{fn}: images must be uint8 (0..255) or float in [0, 1]; got dtype {dt}.")
  if labels is None:
    return images, None
  labels = np.asarray(labels)
  if labels.shape != (images.shape[0],):
    raise ValueError(f"{fn}: labels must have shape [N] = [{images.shape[0]}]; got "
                     f"{labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"{fn}: labels must be integers; got dtype {labels.dtype}.")
  return images, labels


def _check_batch_size(batch_size: Any) -> int:
  if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}.")
  return batch_size


def _to_float(batch: np.ndarray) -> np.ndarray:
  if batch.dtype == np.uint8:
    return batch.astype(np.float32) / np.float32(255.0)
  return batch.astype(np.float32, copy=False)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
  return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
  """Pads the first axis to ``size`` by repeating the last row (keeps shapes static)."""
  n = batch.shape[0]
  if n == size:
    return batch
  reps = np.repeat(batch[-1:], size - n, axis=0)
  return np.concatenate([batch, reps], axis=0)


def _progress(total: int, desc: str, progress: bool):
  return tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False,
              dynamic_ncols=True)


@functools.lru_cache(maxsize=64)
def _jit_predict(model_fn: Callable) -> Callable:
  return jax.jit(lambda x: jnp.argmax(model_fn(x), axis=-1))


@functools.lru_cache(maxsize=16)
def _jit_predict_bound(apply_fn: Callable) -> Callable:
  return jax.jit(lambda v, x: jnp.argmax(apply_fn(v, x), axis=-1))


def _predictor(model: Model) -> Callable[[np.ndarray], np.ndarray]:
  """``x float32 [B, H, W, C] -> predicted labels [B]`` as NumPy, jitted once per model."""
  if isinstance(model, BoundModel):
    fn = _jit_predict_bound(model.apply_fn)
    return lambda x: np.asarray(fn(model.variables, x))
  if not callable(model):
    raise TypeError(f"model must be a callable x -> logits or a BoundModel; got "
                    f"{type(model).__name__}.")
  fn = _jit_predict(model)
  return lambda x: np.asarray(fn(x))


# ------------------------------------------------------------------------------- clean


def predict(model: Model, images: np.ndarray, *, batch_size: int = 256, progress: bool = True,
            desc: str = "predict") -> np.ndarray:
  """Predicted labels ``[N]`` (argmax of the logits), batch by batch.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    batch_size: rows per call (the last batch is padded).
    progress: show a progress bar.
    desc: the progress bar's label.

  Returns:
    ``[N]`` int labels.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([x.mean((1, 2, 3)), 0.5 - x.mean((1, 2, 3))], -1)
    >>> predict(f, np.array([0, 255], np.uint8).reshape(2, 1, 1, 1), progress=False).tolist()
    [1, 0]
  """
  images, _ = _check_arrays(images, None, "predict")
  batch_size = _check_batch_size(batch_size)
  pred = _predictor(model)
  n = images.shape[0]
  out = np.empty((n,), np.int64)
  bs = min(batch_size, max(n, 1))
  with _progress(len(_batches(n, bs)), desc, progress) as bar:
    for s, e in _batches(n, bs):
      out[s:e] = pred(_padded(_to_float(np.asarray(images[s:e])), bs))[: e - s]
      bar.update(1)
  return out


def clean_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                   batch_size: int = 256, progress: bool = True) -> float:
  """Top-1 accuracy on unmodified images.

  .. math:: \\mathrm{acc} = \\frac{1}{N} \\sum_i [\\arg\\max_k f(x_i)_k = y_i]

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    batch_size: rows per call.
    progress: show a progress bar.

  Returns:
    Accuracy in [0, 1].

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([x.mean((1, 2, 3)), 0.5 - x.mean((1, 2, 3))], -1)
    >>> x = np.array([0, 255, 255], np.uint8).reshape(3, 1, 1, 1)
    >>> clean_accuracy(f, x, np.array([1, 0, 1]), progress=False)
    0.6666666666666666
  """
  images, labels = _check_arrays(images, labels, "clean_accuracy")
  pred = predict(model, images, batch_size=batch_size, progress=progress, desc="clean")
  return float(np.mean(pred == labels)) if len(labels) else math.nan


# ------------------------------------------------------------------------------- corruptions


@functools.lru_cache(maxsize=512)
def _jit_corrupt(name: str, severity: Any, table: str) -> Callable:
  """``(key, x, frost_textures=None) -> corrupted x`` with a static severity (one compilation
  per severity); the frost textures are an argument, not a constant."""
  from drojax import corruptions

  return jax.jit(functools.partial(corruptions.corrupt, name=name, severity=severity, table=table))


@functools.lru_cache(maxsize=64)
def jit_corrupt_traced(name: str, table: str) -> Callable:
  """``(key, x, severity, frost_textures=None) -> corrupted x`` with a traced float severity:
  one compilation per corruption, array sizes from the corruption's documented static bounds."""
  from drojax import corruptions

  return jax.jit(lambda key, x, s, frost_textures=None: corruptions.corrupt(
      key, x, name=name, severity=s, table=table, frost_textures=frost_textures))


def _check_corruption_names(names: Iterable[str] | None) -> tuple[str, ...]:
  all_names, _, _ = _names()
  names = all_names if names is None else tuple(names)
  for n in names:
    if n not in all_names:
      raise ValueError(f"unknown corruption {n!r}; expected names from {all_names}.")
  return names


def _check_severities(severities: Iterable[int]) -> tuple[int, ...]:
  severities = tuple(severities)
  for s in severities:
    if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 1 <= s <= 5:
      raise ValueError(f"severities must be ints in 1..5; got {severities!r}.")
  return tuple(int(s) for s in severities)


def corruption_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                        names: Sequence[str] | None = None,
                        severities: Sequence[int] = SEVERITIES, table: str = "standard",
                        key: jax.Array | None = None, batch_size: int = 256,
                        progress: bool = True, compile_once: bool = False,
                        frost_textures: Any = None) -> dict[str, dict[str, float]]:
  """Accuracy on generated corruptions, per corruption and severity.

  Each batch ``b`` of corruption ``c`` (its index in ``NAMES``) at severity ``s`` is corrupted
  with ``fold_in(fold_in(fold_in(key, c), s), b)``.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: clean ``[N, H, W, 3]`` uint8 or float in [0, 1] (the corruptions are for RGB).
    labels: ``[N]`` integer labels.
    names: corruptions to evaluate (default: all 19 in ``drojax.corruptions.NAMES``).
    severities: severities 1..5 to evaluate.
    table: ``'standard'``, ``'refined'`` or ``'refined_cifar100'``.
    key: PRNG key (default :func:`eval_key`).
    batch_size: rows per call.
    progress: show one progress bar over every corruption x severity x batch.
    compile_once: trace the severity (one compilation per corruption instead of one per
      corruption x severity: ~5x less compiling). Kernel and loop sizes then follow each
      corruption's static bounds, which matches the static path to float tolerance for the
      corruptions ``drojax.corruptions`` tests so; the default (static) is the exact protocol.
    frost_textures: textures for ``frost`` (e.g.
      :func:`drojax.corruptions.textures.load_frost_textures`); None: the procedural texture.

  Returns:
    ``{name: {"1": acc, ..., "5": acc}}`` (severity keys are strings, as in JSON).

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.zeros((x.shape[0], 2)).at[:, 0].set(1.0)  # always class 0
    >>> x = np.zeros((4, 8, 8, 3), np.uint8)
    >>> corruption_accuracy(f, x, np.zeros(4, int), names=["contrast"], severities=[1],
    ...                     progress=False)
    {'contrast': {'1': 1.0}}
  """
  from drojax.corruptions import tables

  images, labels = _check_arrays(images, labels, "corruption_accuracy")
  names = _check_corruption_names(names)
  severities = _check_severities(severities)
  tables.check_table(table)
  batch_size = _check_batch_size(batch_size)
  key = eval_key() if key is None else key
  all_names, _, _ = _names()
  if frost_textures is not None:  # on the device once, not per batch
    frost_textures = jax.tree.map(jnp.asarray, frost_textures)
  pred = _predictor(model)
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  spans = _batches(n, bs)
  out: dict[str, dict[str, float]] = {}
  with _progress(len(names) * len(severities) * len(spans), "corruptions", progress) as bar:
    for name in names:
      k_name = jax.random.fold_in(key, all_names.index(name))
      out[name] = {}
      for sev in severities:
        bar.set_postfix_str(f"{name} {sev}")
        if compile_once:
          fn = functools.partial(jit_corrupt_traced(name, table), s=jnp.float32(sev))
        else:
          fn = _jit_corrupt(name, sev, table)
        k_sev = jax.random.fold_in(k_name, sev)
        tex = frost_textures if name == "frost" else None
        correct = 0
        for b, (s, e) in enumerate(spans):
          x = _padded(_to_float(np.asarray(images[s:e])), bs)
          xc = fn(jax.random.fold_in(k_sev, b), x, frost_textures=tex)
          correct += int(np.sum(pred(xc)[: e - s] == labels[s:e]))
          bar.update(1)
        out[name][str(sev)] = correct / n if n else math.nan
  return out


def published_corruption_accuracy(model: Model,
                                  loader: Callable[[str, int], tuple[np.ndarray, np.ndarray]],
                                  *, names: Sequence[str] | None = None,
                                  severities: Sequence[int] = SEVERITIES,
                                  batch_size: int = 256,
                                  progress: bool = True) -> dict[str, dict[str, float]]:
  """Accuracy on pre-made corrupted arrays (e.g. the published CIFAR-10-C).

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    loader: ``loader(name, severity) -> (images [N, H, W, C] uint8, labels [N])``, e.g. from
      :func:`drojax.data.published_c.make_loader`.
    names: corruptions to evaluate (default: all 19).
    severities: severities 1..5.
    batch_size: rows per call.
    progress: show a progress bar per corruption x severity.

  Returns:
    ``{name: {"1": acc, ..., "5": acc}}``.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
    >>> loader = lambda name, s: (np.full((4, 2, 2, 3), 60 * s, np.uint8), np.ones(4, int))
    >>> published_corruption_accuracy(f, loader, names=["fog"], severities=[1, 3],
    ...                               progress=False)
    {'fog': {'1': 0.0, '3': 1.0}}
  """
  names = _check_corruption_names(names)
  severities = _check_severities(severities)
  out: dict[str, dict[str, float]] = {}
  combos = [(n, s) for n in names for s in severities]
  with tqdm(total=len(combos), desc="published corruptions", disable=not progress,
            leave=False) as bar:
    for name, sev in combos:
      bar.set_postfix_str(f"{name} {sev}")
      images, labels = loader(name, sev)
      images, labels = _check_arrays(images, labels, f"published {name} severity {sev}")
      out.setdefault(name, {})[str(sev)] = clean_accuracy(
          model, images, labels, batch_size=batch_size, progress=False)
      bar.update(1)
  return out


def summarize_corruptions(acc: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
  """Means of a corruption table.

  Args:
    acc: ``{name: {severity: accuracy}}`` as returned by :func:`corruption_accuracy`.

  Returns:
    ``mean_corruption_accuracy`` (mean over the standard corruptions present x their
    severities; ``None`` if none), ``extra_corruption_accuracy`` (the same over the extras),
    ``per_corruption_mean`` ``{name: mean}``, ``per_severity_mean`` (standard corruptions only)
    ``{severity: mean}`` and ``complete`` (all 15 x 5 present).

  Example:
    >>> s = summarize_corruptions({"fog": {"1": 0.8, "2": 0.6}, "spatter": {"1": 0.5}})
    >>> round(s["mean_corruption_accuracy"], 6), s["extra_corruption_accuracy"]
    (0.7, 0.5)
  """
  _, standard, extras = _names()
  def mean(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None

  std_vals = [v for n in standard if n in acc for v in acc[n].values()]
  extra_vals = [v for n in extras if n in acc for v in acc[n].values()]
  sev_keys = sorted({k for n in standard if n in acc for k in acc[n]}, key=lambda k: float(k))
  return {
      "mean_corruption_accuracy": mean(std_vals),
      "extra_corruption_accuracy": mean(extra_vals),
      "per_corruption_mean": {n: mean(list(acc[n].values())) for n in acc},
      "per_severity_mean": {k: mean([acc[n][k] for n in standard if n in acc and k in acc[n]])
                            for k in sev_keys},
      "complete": all(n in acc and all(str(s) in acc[n] for s in SEVERITIES) for n in standard),
  }


# ------------------------------------------------------------------------------- adversarial


def eps_key(eps: float) -> str:
  """The JSON key of a budget: ``'%.6g'`` of the pixel-space eps.

  Args:
    eps: the budget in pixel units.

  Returns:
    Its key in ``adversarial_accuracy`` dicts.

  Example:
    >>> eps_key(8 / 255)
    '0.0313725'
  """
  return f"{float(eps):.6g}"


@functools.lru_cache(maxsize=64)
def _jit_attack(apply_fn: Callable | None, model_fn: Callable | None, num_steps: int, norm: str,
                random_start: bool, restarts: int, unroll: bool | None) -> Callable:
  def robust(variables, key, x, y, eps, step_size):
    if apply_fn is not None:
      f = functools.partial(apply_fn, variables)
    else:
      f = model_fn
    _, r = attacks.pgd_robust(key, f, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                              norm=norm, random_start=random_start, restarts=restarts,
                              unroll=unroll)
    return r
  return jax.jit(robust)


def adversarial_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                         eps: Sequence[float], num_steps: int = 20,
                         step_size: float | Sequence[float] | None = None,
                         norm: str = "linf", random_start: bool = True, restarts: int = 1,
                         unroll: bool | None = None, key: jax.Array | None = None,
                         batch_size: int = 256, progress: bool = True) -> dict[str, float]:
  """PGD robust accuracy at each budget in ``eps`` (pixel space).

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    eps: budgets, e.g. ``(4/255, 8/255, 16/255)``; 0 gives the clean accuracy.
    num_steps: PGD steps.
    step_size: one step for every eps, one per eps, or None for ``eps / 8`` (the DRO-Augment
      Fashion-MNIST recipe: 0.5/255 at 4/255, 20 steps).
    norm: ``'linf'`` or ``'l2'``.
    random_start: uniform start in the ball.
    restarts: random restarts (an example is robust only if it survives all).
    unroll: PGD loop form (see :func:`drojax.attacks.default_unroll`).
    key: PRNG key (default :func:`eval_key`); batch ``b`` uses ``fold_in(key, b)``.
    batch_size: rows per call.
    progress: show a progress bar.

  Returns:
    ``{eps_key(eps): accuracy}``.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
    >>> x = np.array([0.9, 0.7], np.float32).reshape(2, 1, 1, 1)  # fooled past 0.4, 0.2
    >>> adversarial_accuracy(f, x, np.array([1, 1]), eps=[0.0, 0.3, 0.5], num_steps=5,
    ...                      step_size=[0.1, 0.15, 0.25], progress=False)
    {'0': 1.0, '0.3': 0.5, '0.5': 0.0}
  """
  images, labels = _check_arrays(images, labels, "adversarial_accuracy")
  batch_size = _check_batch_size(batch_size)
  eps = [float(e) for e in eps]
  if any(e < 0 or math.isnan(e) for e in eps):
    raise ValueError(f"eps must be >= 0; got {eps}.")
  if step_size is None:
    steps = [e / 8 for e in eps]
  elif isinstance(step_size, (int, float)):
    steps = [float(step_size)] * len(eps)
  else:
    steps = [float(s) for s in step_size]
    if len(steps) != len(eps):
      raise ValueError(f"step_size must be one number or one per eps ({len(eps)}); got "
                       f"{len(steps)}.")
  attacks.check_pgd_options(norm=norm, num_steps=num_steps, restarts=restarts)
  key = eval_key() if key is None else key
  if isinstance(model, BoundModel):
    fn = _jit_attack(model.apply_fn, None, num_steps, norm, bool(random_start), restarts, unroll)
    variables = model.variables
  else:
    if not callable(model):
      raise TypeError(f"model must be a callable x -> logits or a BoundModel; got "
                      f"{type(model).__name__}.")
    fn = _jit_attack(None, model, num_steps, norm, bool(random_start), restarts, unroll)
    variables = None
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  spans = _batches(n, bs)
  out = {}
  with _progress(len(eps) * len(spans), f"PGD-{num_steps} {norm}", progress) as bar:
    for e, st in zip(eps, steps):
      bar.set_postfix_str(f"eps={e:.4g}")
      robust = 0
      for b, (s, t) in enumerate(spans):
        x = _padded(_to_float(np.asarray(images[s:t])), bs)
        y = _padded(labels[s:t].astype(np.int32), bs)
        r = fn(variables, jax.random.fold_in(key, b), x, y, np.float32(e), np.float32(st))
        robust += int(np.sum(np.asarray(r)[: t - s]))
        bar.update(1)
      out[eps_key(e)] = robust / n if n else math.nan
  return out


ATTACKS = ("pgd", "apgd", "suite")
ATTACK_LABELS = {"pgd": "PGD", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T", "fab_t": "FAB-T",
                 "square": "Square"}


@functools.lru_cache(maxsize=64)
def _jit_attack_stage(apply_fn: Callable | None, model_fn: Callable | None, stage: str,
                      num_steps: int, num_targets: int, num_queries: int, restarts: int,
                      norm: str) -> Callable:
  """One attack on one batch: ``robust(variables, key, x, y, eps, n_valid) -> [B] bool``.

  ``stage`` is one of ``attacks.SUITE_ATTACKS``; rows ``>= n_valid`` (padding)
  come back False.
  """
  def robust(variables, key, x, y, eps, n_valid):
    f = functools.partial(apply_fn, variables) if apply_fn is not None else model_fn
    return attacks.suite._attack_stage(
        stage, key, f, x, y, jnp.asarray(eps, x.dtype), jnp.arange(x.shape[0]) < n_valid,
        norm=norm, num_steps=num_steps, num_targets=num_targets, num_queries=num_queries,
        p_init=0.8, restarts=restarts)
  return jax.jit(robust)


def _survivor_batches(rows: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """Splits row indices into batches of ``batch_size``; ``[(rows_b, padded_size_b)]``.

  A short last batch is padded only up to the smallest of ``batch_size`` / 8, / 4, / 2, / 1
  (rounded up) that holds it: at most four shapes per attack to compile, at most twice the
  rows computed.
  """
  sizes = sorted({-(-batch_size // d) for d in (8, 4, 2, 1)})
  out = []
  for s in range(0, len(rows), batch_size):
    chunk = rows[s:s + batch_size]
    out.append((chunk, next(z for z in sizes if z >= len(chunk))))
  return out


def auto_attack_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                         eps: Sequence[float], attack: str = "suite", num_steps: int = 100,
                         num_targets: int | None = None, num_queries: int = 5000,
                         restarts: int = 1,
                         norm: str = "linf", key: jax.Array | None = None,
                         batch_size: int = 256, progress: bool = True
                         ) -> dict[str, dict[str, float]]:
  """Robust accuracy under APGD-CE alone or the worst-case suite, at each budget.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    eps: budgets in pixel units (0 gives the clean accuracy).
    attack: ``'apgd'`` (APGD-CE, ``restarts`` restarts) or ``'suite'`` (APGD-CE, APGD-T,
      FAB-T, Square: AutoAttack's standard version; the verdicts of :func:`drojax.attacks.robust_suite`). As AutoAttack does, each
      attack of the suite runs only on the images every earlier one left robust, gathered
      from all batches into new ones, so an image a cheap attack breaks costs nothing later.
    num_steps: APGD and FAB-T iterations; num_targets: APGD-T and FAB-T targets (<= K - 1;
      K >= 4), None for
      ``min(9, K - 1)`` (AutoAttack's 9 on 10 classes);
    num_queries: Square's queries; restarts: APGD-CE restarts (``'apgd'`` only).
    norm: ``'linf'`` or ``'l2'`` (for the suite, all four attacks in that norm).
    key: PRNG key (default :func:`eval_key`); the ``j``-th batch of an attack uses
      ``fold_in(key, j)`` (``'apgd'``), or ``fold_in(fold_in(key, j), i)`` for the suite's
      ``i``-th attack (0 APGD-CE, 1 APGD-T, 2 FAB-T, 3 Square).
    batch_size: rows per call (a short last batch is padded to ``batch_size`` / 8, / 4, / 2
      or / 1, the smallest that holds it); progress: show a progress bar.

  Returns:
    ``{attack_name: {eps_key(eps): accuracy}}`` with names ``'apgd_ce'`` (and ``'apgd_t'``,
    ``'fab_t'``, ``'square'`` for the suite): the accuracy after that attack, cumulative, so the last
    is the worst case.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> w = jnp.array([[1.0, -1.0, 0.0, 0.0]])
    >>> f = lambda x: x.mean((1, 2, 3))[:, None] * w + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = np.array([0.9, 0.3], np.float32).reshape(2, 1, 1, 1)  # margins .8, .1
    >>> auto_attack_accuracy(f, x, np.array([0, 0]), eps=[0.1], num_steps=5, num_targets=3,
    ...                      num_queries=10, progress=False)
    {'apgd_ce': {'0.1': 0.5}, 'apgd_t': {'0.1': 0.5}, 'fab_t': {'0.1': 0.5}, 'square': {'0.1': 0.5}}
  """
  auto, suite = attacks.auto, attacks.suite
  images, labels = _check_arrays(images, labels, "auto_attack_accuracy")
  batch_size = _check_batch_size(batch_size)
  if attack not in ("apgd", "suite"):
    raise ValueError(f"attack must be 'apgd' or 'suite'; got {attack!r}.")
  eps = [float(e) for e in eps]
  if any(e < 0 or math.isnan(e) for e in eps):
    raise ValueError(f"eps must be >= 0; got {eps}.")
  if attack == "suite":
    suite.check_suite_options(eps=None, norm=norm, num_steps=num_steps,
                              num_targets=1 if num_targets is None else num_targets,
                              num_queries=num_queries, p_init=0.8)
  else:
    attacks.check_pgd_options(norm=norm, num_steps=num_steps, restarts=restarts)
    auto._check_int(num_steps, "num_steps", 1)
  key = eval_key() if key is None else key
  if isinstance(model, BoundModel):
    apply_fn, model_fn, variables = model.apply_fn, None, model.variables
  else:
    if not callable(model):
      raise TypeError(f"model must be a callable x -> logits or a BoundModel; got "
                      f"{type(model).__name__}.")
    apply_fn, model_fn, variables = None, model, None
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  if attack == "suite" and n:
    f = model_fn if model_fn is not None else functools.partial(apply_fn, variables)
    k = auto._num_classes(f, jnp.zeros((1,) + images.shape[1:], jnp.float32))
    if num_targets is None:
      num_targets = max(1, min(9, k - 1))
    suite.check_suite_options(eps=None, norm=norm, num_steps=num_steps,
                              num_targets=num_targets, num_queries=num_queries, p_init=0.8,
                              num_classes=k)
  stages = ("apgd_ce",) if attack == "apgd" else suite.SUITE_ATTACKS
  fns = {a: _jit_attack_stage(apply_fn, model_fn, a,
                              0 if a == "square" else num_steps,
                              num_targets if a in ("apgd_t", "fab_t") else 0,
                              num_queries if a == "square" else 0,
                              restarts if attack == "apgd" else 1, norm)
         for a in stages}
  out: dict[str, dict[str, float]] = {a: {} for a in stages}
  desc = f"APGD-CE-{num_steps}" if attack == "apgd" else (
      f"suite (APGD-CE/T-{num_steps}, FAB-T-{num_steps}, Square-{num_queries})")
  with _progress(len(eps) * len(_batches(n, bs)), f"{desc} {norm}", progress) as bar:
    for e in eps:
      bar.set_postfix_str(f"eps={e:.4g}")
      rows = np.arange(n)
      for i, a in enumerate(stages):
        # Each attack sees only the rows every earlier one left robust, gathered into full
        # batches (AutoAttack's order); masking them inside one batch would cost as much as
        # attacking all of them.
        batches = _survivor_batches(rows, bs)
        if i:
          bar.total += len(batches)
          bar.refresh()
        kept = []
        for j, (chunk, size) in enumerate(batches):
          x = _padded(_to_float(np.asarray(images[chunk])), size)
          y = _padded(labels[chunk].astype(np.int32), size)
          kb = jax.random.fold_in(key, j)
          if attack == "suite":
            kb = jax.random.fold_in(kb, i)
          r = np.asarray(fns[a](variables, kb, x, y, np.float32(e), np.int32(len(chunk))))
          kept.append(chunk[r[:len(chunk)]])
          bar.update(1)
        rows = np.concatenate(kept) if kept else rows[:0]
        out[a][eps_key(e)] = len(rows) / n if n else math.nan
  return out


# ------------------------------------------------------------------------------- groups


def group_accuracy(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                   train_groups: np.ndarray | None = None) -> dict[str, Any]:
  """Per-group, worst-group and training-proportion-weighted average accuracy.

  .. math:: \\mathrm{avg} = \\sum_g \\frac{n^{train}_g}{n^{train}} \\mathrm{acc}_g, \\qquad
            \\mathrm{worst} = \\min_g \\mathrm{acc}_g

  over the groups present in the evaluation set. Without ``train_groups`` the weights are the
  evaluation set's own proportions (then ``average`` equals plain accuracy).

  Args:
    predictions: ``[N]`` predicted labels.
    labels: ``[N]`` true labels.
    groups: ``[N]`` integer group ids (Waterbirds: ``2 * y + place``).
    train_groups: group ids of the training examples (for the weights), or None.

  Returns:
    ``{"per_group": {g: acc}, "counts": {g: n}, "worst_group": acc, "worst_group_id": g,
    "average": acc, "weights": {g: w}, "weights_from": "train" | "eval"}`` (group keys are
    strings, as in JSON).

  Example:
    >>> r = group_accuracy(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 1]),
    ...                    np.array([0, 0, 1, 1]), train_groups=np.array([0, 0, 0, 1]))
    >>> r["per_group"], r["worst_group"], r["average"]
    ({'0': 1.0, '1': 0.5}, 0.5, 0.875)
  """
  predictions, labels, groups = (np.asarray(a) for a in (predictions, labels, groups))
  if not (predictions.shape == labels.shape == groups.shape and predictions.ndim == 1):
    raise ValueError(f"predictions, labels and groups must all have shape [N]; got "
                     f"{predictions.shape}, {labels.shape}, {groups.shape}.")
  if not np.issubdtype(groups.dtype, np.integer):
    raise TypeError(f"groups must be integer ids; got dtype {groups.dtype}.")
  ids = sorted(int(g) for g in np.unique(groups))
  if not ids:
    raise ValueError("groups is empty: nothing to evaluate.")
  correct = predictions == labels
  per = {str(g): float(np.mean(correct[groups == g])) for g in ids}
  counts = {str(g): int(np.sum(groups == g)) for g in ids}
  if train_groups is not None:
    train_groups = np.asarray(train_groups)
    if train_groups.ndim != 1 or not np.issubdtype(train_groups.dtype, np.integer):
      raise ValueError(f"train_groups must be integer ids [M]; got shape {train_groups.shape} "
                       f"dtype {train_groups.dtype}.")
    w = np.array([np.sum(train_groups == g) for g in ids], np.float64)
    source = "train"
    if w.sum() == 0:
      raise ValueError(f"train_groups holds none of the evaluated groups {ids}.")
  else:
    w = np.array([counts[str(g)] for g in ids], np.float64)
    source = "eval"
  w = w / w.sum()
  worst = min(ids, key=lambda g: per[str(g)])
  return {
      "per_group": per,
      "counts": counts,
      "worst_group": per[str(worst)],
      "worst_group_id": worst,
      "average": float(sum(wi * per[str(g)] for wi, g in zip(w, ids))),
      "weights": {str(g): float(wi) for g, wi in zip(ids, w)},
      "weights_from": source,
  }


# ------------------------------------------------------------------------------- everything


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, *,
             corruptions: str | None = "generated", table: str = "standard",
             corruption_names: Sequence[str] | None = None,
             severities: Sequence[int] = SEVERITIES,
             published_loader: Callable[[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
             adv_eps: Sequence[float] = (), adv_steps: int = 20,
             adv_step_size: float | Sequence[float] | None = None, adv_norm: str = "linf",
             adv_restarts: int = 1, adv_images: int | None = None, adv_attack: str = "pgd",
             adv_apgd_steps: int = 100, adv_square_queries: int = 5000,
             groups: np.ndarray | None = None, train_groups: np.ndarray | None = None,
             seed: int = EVAL_SEED, batch_size: int = 256, progress: bool = True,
             compile_once: bool = False, frost_dir: str | None = None) -> dict[str, Any]:
  """Runs the whole protocol and returns a dict in the ``results.json`` schema.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: test images ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    corruptions: ``'generated'`` (on the fly with ``table``), ``'published'`` (through
      ``published_loader``) or None (skip).
    table: severity table for generated corruptions.
    corruption_names: corruptions to evaluate (default all 19).
    severities: severities to evaluate.
    published_loader: ``(name, severity) -> (images, labels)`` for ``'published'``.
    adv_eps: PGD budgets (empty: skip).
    adv_steps, adv_step_size, adv_norm, adv_restarts: PGD settings (step default eps / 8).
    adv_images: attack only the first this many images (None: all).
    adv_attack: ``'pgd'`` (``adv_steps`` steps), ``'apgd'`` (APGD-CE, ``adv_apgd_steps``
      steps, ``adv_restarts`` restarts) or ``'suite'`` (APGD-CE, APGD-T and FAB-T with 9
      targets and ``adv_apgd_steps`` steps, Square with ``adv_square_queries`` queries; all
      four in ``adv_norm``).
    groups: ``[N]`` group ids (Waterbirds-style), or None.
    train_groups: training group ids for the weighted average.
    seed: evaluation seed (:func:`eval_key`).
    batch_size: rows per call.
    progress: progress bars.
    compile_once: generated corruptions with a traced severity (see
      :func:`corruption_accuracy`).
    frost_dir: folder of frost photographs for the generated ``frost`` (read with
      :func:`drojax.corruptions.textures.load_frost_textures`, resized by 0.2 as the reference
      maker does); None: the procedural texture. Only with ``corruptions='generated'``.

  Returns:
    ``clean_accuracy``, ``corruption_source``, ``frost_textures`` (``'procedural'`` or
    ``{'dir', 'files', 'scale'}``; with generated corruptions), ``corruption_accuracy``,
    ``mean_corruption_accuracy``, ``extra_corruption_accuracy``, ``corruption_summary``,
    ``adversarial_accuracy`` (the chosen attack's, for the suite the worst case),
    ``adversarial_by_attack`` (``{'pgd' | 'apgd_ce' | 'apgd_t' | 'fab_t' | 'square': {eps: acc}}``,
    cumulative in the suite's order), ``adversarial`` (settings), ``group_accuracy`` (when groups),
    ``eval_seed``, ``num_eval``.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
    >>> x = np.full((4, 8, 8, 3), 200, np.uint8)
    >>> r = evaluate(f, x, np.ones(4, int), corruption_names=["brightness"], severities=[1],
    ...              adv_eps=[8 / 255], adv_steps=2, progress=False)
    >>> r["clean_accuracy"], r["mean_corruption_accuracy"], r["adversarial_accuracy"]
    (1.0, 1.0, {'0.0313725': 1.0})
  """
  images, labels = _check_arrays(images, labels, "evaluate")
  if adv_attack not in ATTACKS:
    raise ValueError(f"adv_attack must be one of {ATTACKS}; got {adv_attack!r}.")
  frost_textures = None
  if frost_dir is not None:
    if corruptions != "generated":
      raise ValueError(f"frost_dir applies to generated corruptions; got corruptions="
                       f"{corruptions!r}.")
    from drojax.corruptions import textures as textures_lib

    frost_textures = textures_lib.load_frost_textures(frost_dir)  # errors before any work
    if (frost_textures.sizes < np.asarray(images.shape[1:3])).any():
      raise ValueError(f"frost_dir: every frost texture must be at least as large as the "
                       f"images {images.shape[1:3]} after the 0.2 resize; got sizes "
                       f"{frost_textures.sizes.tolist()}.")
  key = eval_key(seed)
  results: dict[str, Any] = {"num_eval": int(images.shape[0]), "eval_seed": seed}
  pred = predict(model, images, batch_size=batch_size, progress=progress, desc="clean")
  results["clean_accuracy"] = float(np.mean(pred == labels)) if len(labels) else math.nan
  if corruptions == "generated":
    acc = corruption_accuracy(model, images, labels, names=corruption_names,
                              severities=severities, table=table,
                              key=jax.random.fold_in(key, 1), batch_size=batch_size,
                              progress=progress, compile_once=compile_once,
                              frost_textures=frost_textures)
    results["corruption_source"] = f"generated:{table}"
    if frost_dir is None:
      results["frost_textures"] = "procedural"
    else:
      results["frost_textures"] = {"dir": os.path.abspath(frost_dir),
                                   "files": textures_lib.frost_files(frost_dir), "scale": 0.2}
  elif corruptions == "published":
    if published_loader is None:
      raise ValueError("corruptions='published' needs published_loader (see "
                       "drojax.data.published_c.make_loader).")
    acc = published_corruption_accuracy(model, published_loader, names=corruption_names,
                                        severities=severities, batch_size=batch_size,
                                        progress=progress)
    results["corruption_source"] = "published"
  elif corruptions is None:
    acc = {}
    results["corruption_source"] = None
  else:
    raise ValueError(f"corruptions must be 'generated', 'published' or None; got "
                     f"{corruptions!r}.")
  summary = summarize_corruptions(acc)
  results["corruption_accuracy"] = acc
  results["mean_corruption_accuracy"] = summary["mean_corruption_accuracy"]
  results["extra_corruption_accuracy"] = summary["extra_corruption_accuracy"]
  results["corruption_summary"] = summary
  if adv_eps:
    m = images.shape[0] if adv_images is None else min(int(adv_images), images.shape[0])
    if adv_attack == "pgd":
      acc = adversarial_accuracy(
          model, images[:m], labels[:m], eps=adv_eps, num_steps=adv_steps,
          step_size=adv_step_size, norm=adv_norm, restarts=adv_restarts,
          key=jax.random.fold_in(key, 2), batch_size=batch_size, progress=progress)
      by_attack = {"pgd": acc}
      settings = {"attack": "pgd", "norm": adv_norm, "num_steps": adv_steps,
                  "restarts": adv_restarts, "random_start": True, "num_images": m,
                  "step_size": ("eps/8" if adv_step_size is None else adv_step_size)}
    else:
      by_attack = auto_attack_accuracy(
          model, images[:m], labels[:m], eps=adv_eps, attack=adv_attack,
          num_steps=adv_apgd_steps, num_queries=adv_square_queries, restarts=adv_restarts,
          norm=adv_norm, key=jax.random.fold_in(key, 3), batch_size=batch_size,
          progress=progress)
      acc = by_attack[list(by_attack)[-1]]
      settings = {"attack": adv_attack, "norm": adv_norm, "num_steps": adv_apgd_steps,
                  "num_images": m}
      if adv_attack == "suite":
        settings.update(attacks="APGD-CE, APGD-T and FAB-T (min(9, K - 1) targets), Square "
                                "(p_init 0.8)",
                        square_queries=adv_square_queries)
      else:
        settings["restarts"] = adv_restarts
    results["adversarial_accuracy"] = acc
    results["adversarial_by_attack"] = by_attack
    results["adversarial"] = settings
  else:
    results["adversarial_accuracy"] = {}
  if groups is not None:
    results["group_accuracy"] = group_accuracy(pred, labels, np.asarray(groups),
                                               train_groups=train_groups)
  return results


__all__ = [
    "EVAL_SEED", "FAMILIES", "SEVERITIES", "BoundModel", "eval_key", "predict",
    "clean_accuracy", "corruption_accuracy", "published_corruption_accuracy",
    "summarize_corruptions", "eps_key", "adversarial_accuracy", "ATTACKS", "ATTACK_LABELS",
    "auto_attack_accuracy", "group_accuracy", "evaluate",
]
