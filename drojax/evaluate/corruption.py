"""Accuracy under corruptions (CIFAR-C, generated or published), per corruption x severity,
and the summary means of such a table.

Protocol (RobustBench / Hendrycks & Dietterich): the headline ``mean_corruption_accuracy`` is
the mean over the 15 standard corruptions x 5 severities (over those evaluated, if a subset is
asked for); the 4 extras are averaged separately into ``extra_corruption_accuracy``. Generated
corruptions use :func:`drojax.corruptions.corrupt` with a fixed evaluation key folded with the
corruption, the severity and the batch index, so a result is reproducible for a given batch
size. Images are NHWC uint8 (divided by 255) or float in [0, 1].
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from drojax import _checks
from drojax.evaluate.batching import (Model, batches, check_arrays, eval_key, float_batch,
                                      predictor, progress_bar)
from drojax.evaluate.clean import clean_accuracy
from drojax.evaluate.share import ALONE, Share

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



@functools.lru_cache(maxsize=512)
def _jit_corrupt_severities(name: str, severities: tuple[int, ...], table: str) -> Callable:
  """``(keys, x, frost_textures=None) -> (corrupted x per severity)``: one compilation for all
  ``severities`` (static: each one's graph is ``corrupt``'s at that Python int), ``keys`` one
  PRNG key per severity. Compiling once per corruption instead of once per corruption x
  severity saves the per-compilation overhead that dominated the quick preset's evaluation;
  the values are those of one call per severity (tests/test_evaluate.py checks it)."""
  from drojax import corruptions

  def corrupt_all(keys, x, frost_textures=None):
    return tuple(corruptions.corrupt(k, x, name=name, severity=s, table=table,
                                     frost_textures=frost_textures)
                 for k, s in zip(keys, severities, strict=True))

  return jax.jit(corrupt_all)


@functools.lru_cache(maxsize=64)
def jit_corrupt_traced(name: str, table: str) -> Callable:
  """``(key, x, severity, frost_textures=None) -> corrupted x`` with a traced float severity:
  one compilation per corruption, array sizes from the corruption's documented static bounds."""
  from drojax import corruptions

  return jax.jit(lambda key, x, s, frost_textures=None: corruptions.corrupt(
      key, x, name=name, severity=s, table=table, frost_textures=frost_textures))


def _corrupt_fn(name: str, severities: tuple[int, ...], table: str,
                compile_once: bool) -> Callable:
  """``(keys, x, frost_textures=None) -> (corrupted x per severity)``, ``keys`` one per
  severity: all static severities in one compilation, or the traced-severity function."""
  if not compile_once:
    return _jit_corrupt_severities(name, severities, table)
  traced = jit_corrupt_traced(name, table)

  def corrupt_all(keys, x, frost_textures=None):
    return tuple(traced(k, x, jnp.float32(s), frost_textures=frost_textures)
                 for k, s in zip(keys, severities, strict=True))

  return corrupt_all


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
                        frost_textures: Any = None,
                        share: Share = ALONE) -> dict[str, dict[str, float]]:
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
    compile_once: trace the severity (one compiled function per corruption whatever the
      severities, each severity a call). Kernel and loop sizes then follow each corruption's
      static bounds, which matches the static path to float tolerance for the corruptions
      ``drojax.corruptions`` tests so. The default (static) is the exact protocol: every
      requested severity of a corruption, each with its own static parameters, compiled into
      one function that corrupts a batch at all of them (so its memory holds that many
      corrupted batches at once).
    frost_textures: textures for ``frost`` (e.g.
      :func:`drojax.corruptions.textures.load_frost_textures`); None: the procedural texture.
    share: this process's batches (:mod:`drojax.evaluate.share`).

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

  images, labels = check_arrays(images, labels, "corruption_accuracy", model)
  names = _check_corruption_names(names)
  severities = _check_severities(severities)
  tables.check_table(table)
  batch_size = _checks.check_static_int("batch_size", batch_size, minimum=1)
  key = eval_key() if key is None else key
  all_names, _, _ = _names()
  if frost_textures is not None:  # on the device once, not per batch
    frost_textures = jax.tree.map(jnp.asarray, frost_textures)
  pred = predictor(model)
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  spans = batches(n, bs)
  mine = share.mine(len(spans))
  correct = np.zeros((len(names), len(severities)), np.int64)
  with progress_bar(len(names) * len(severities) * len(mine), "corruptions", progress) as bar:
    for c, name in enumerate(names):
      bar.set_postfix_str(name)
      k_name = jax.random.fold_in(key, all_names.index(name))
      k_sevs = [jax.random.fold_in(k_name, sev) for sev in severities]
      tex = frost_textures if name == "frost" else None
      fn = _corrupt_fn(name, severities, table, compile_once)
      for b in mine:
        s, e = spans[b]
        x = float_batch(images, s, e, bs)
        xcs = fn(tuple(jax.random.fold_in(k, b) for k in k_sevs), x, frost_textures=tex)
        for v, xc in enumerate(xcs):
          correct[c, v] += int(np.sum(pred(xc)[: e - s] == labels[s:e]))
          bar.update(1)
  correct = share.total(correct)
  return {name: {str(sev): int(correct[c, v]) / n if n else math.nan
                 for v, sev in enumerate(severities)} for c, name in enumerate(names)}


def published_corruption_accuracy(model: Model,
                                  loader: Callable[[str, int], tuple[np.ndarray, np.ndarray]],
                                  *, names: Sequence[str] | None = None,
                                  severities: Sequence[int] = SEVERITIES,
                                  batch_size: int = 256, progress: bool = True,
                                  share: Share = ALONE) -> dict[str, dict[str, float]]:
  """Accuracy on pre-made corrupted arrays (e.g. the published CIFAR-10-C).

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    loader: ``loader(name, severity) -> (images [N, H, W, C] uint8, labels [N])``, e.g. from
      :func:`drojax.data.published_c.make_loader`.
    names: corruptions to evaluate (default: all 19).
    severities: severities 1..5.
    batch_size: rows per call.
    progress: show a progress bar per corruption x severity.
    share: this process's batches of each array (:mod:`drojax.evaluate.share`); every process
      calls ``loader`` for every array.

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
      images, labels = check_arrays(images, labels, f"published {name} severity {sev}", model)
      out.setdefault(name, {})[str(sev)] = clean_accuracy(
          model, images, labels, batch_size=batch_size, progress=False, share=share)
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
    ``{severity: mean}``, ``extra_per_severity_mean`` (the same over the extras) and
    ``complete`` (all 15 x 5 present).

  Example:
    >>> s = summarize_corruptions({"fog": {"1": 0.8, "2": 0.6}, "spatter": {"1": 0.5}})
    >>> round(s["mean_corruption_accuracy"], 6), s["extra_corruption_accuracy"]
    (0.7, 0.5)
  """
  _, standard, extras = _names()
  def mean(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None

  def per_severity(names):
    keys = sorted({k for n in names if n in acc for k in acc[n]}, key=float)
    return {k: mean([acc[n][k] for n in names if n in acc and k in acc[n]]) for k in keys}

  return {
      "mean_corruption_accuracy": mean([v for n in standard if n in acc for v in acc[n].values()]),
      "extra_corruption_accuracy": mean([v for n in extras if n in acc for v in acc[n].values()]),
      "per_corruption_mean": {n: mean(list(acc[n].values())) for n in acc},
      "per_severity_mean": per_severity(standard),
      "extra_per_severity_mean": per_severity(extras),
      "complete": all(n in acc and all(str(s) in acc[n] for s in SEVERITIES) for n in standard),
  }


__all__ = ["FAMILIES", "SEVERITIES", "jit_corrupt_traced", "corruption_accuracy",
           "published_corruption_accuracy", "summarize_corruptions"]
