"""The whole evaluation protocol of a trained model, configured by one :class:`EvalConfig`:
clean, corrupted (generated or published), adversarial (PGD, APGD-CE or the suite) and group
accuracy, returned as one dict in the ``results.json`` schema.

Images are NHWC uint8 (divided by 255) or float in [0, 1]. Each part draws its key from
``fold_in(eval_key(config.seed), part)`` (1 corruptions, 2 PGD, 3 APGD / suite), so a part's
numbers do not depend on which other parts run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from drojax.evaluate import adversarial, corruption
from drojax.evaluate.batching import EVAL_SEED, Model, batches, check_arrays, eval_key
from drojax.evaluate.clean import predict
from drojax.evaluate.groups import group_accuracy
from drojax.evaluate.share import ALONE, Share

CORRUPTION_SOURCES = ("generated", "published", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
  """What :func:`evaluate` measures and how.

  Attributes:
    corruptions: ``'generated'`` (on the fly with ``table``), ``'published'`` (through
      ``evaluate``'s ``published_loader``) or None (skip).
    table: severity table for generated corruptions (``'standard'``, ``'refined'``,
      ``'refined_cifar100'``).
    corruption_names: corruptions to evaluate (None: all 19).
    severities: severities 1..5 to evaluate.
    compile_once: generated corruptions with a traced severity (see
      :func:`~drojax.evaluate.corruption_accuracy`).
    frost_dir: folder of frost photographs for the generated ``frost`` (read with
      :func:`drojax.corruptions.textures.load_frost_textures`, resized by 0.2 as the reference
      maker does); None: the procedural texture. Only with ``corruptions='generated'``.
    eps: attack budgets in pixel units (empty: no attack).
    attack: ``'pgd'``, ``'apgd'`` (APGD-CE, ``restarts`` restarts) or ``'suite'`` (APGD-CE,
      APGD-T and FAB-T with ``min(9, K - 1)`` targets, Square with ``num_queries`` queries;
      all four in ``norm``).
    norm: ``'linf'`` or ``'l2'``.
    num_steps: the attack's iterations (PGD steps, or APGD's and FAB-T's per run); None: 20
      for PGD, 100 for APGD and the suite.
    step_size: PGD only: one step for every eps, one per eps, or None for ``eps / 8``.
    restarts: random restarts of PGD or APGD-CE (not the suite).
    num_queries: Square's queries per image (the suite only).
    attack_images: attack only the first this many images (None: all).
    seed: evaluation seed (:func:`~drojax.evaluate.eval_key`).
    batch_size: rows per call (generated corruptions depend on it through the batch index).

  Example:
    >>> EvalConfig(eps=(8 / 255,), attack="suite").resolved_num_steps
    100
  """

  corruptions: str | None = "generated"
  table: str = "standard"
  corruption_names: Sequence[str] | None = None
  severities: Sequence[int] = corruption.SEVERITIES
  compile_once: bool = False
  frost_dir: str | None = None
  eps: Sequence[float] = ()
  attack: str = "pgd"
  norm: str = "linf"
  num_steps: int | None = None
  step_size: float | Sequence[float] | None = None
  restarts: int = 1
  num_queries: int = 5000
  attack_images: int | None = None
  seed: int = EVAL_SEED
  batch_size: int = 256

  def __post_init__(self):
    if self.corruptions not in CORRUPTION_SOURCES:
      raise ValueError(f"EvalConfig.corruptions must be one of {CORRUPTION_SOURCES}; got "
                       f"{self.corruptions!r}.")
    if self.attack not in adversarial.ATTACKS:
      raise ValueError(f"EvalConfig.attack must be one of {adversarial.ATTACKS}; got "
                       f"{self.attack!r}.")
    if self.frost_dir is not None and self.corruptions != "generated":
      raise ValueError(f"frost_dir applies to generated corruptions; got corruptions="
                       f"{self.corruptions!r}.")
    for name in ("corruption_names", "severities", "eps", "step_size"):
      value = getattr(self, name)
      if value is not None and not isinstance(value, (str, int, float)):
        object.__setattr__(self, name, tuple(value))

  @property
  def resolved_num_steps(self) -> int:
    """``num_steps``, or the chosen attack's default (20 for PGD, 100 for APGD and the suite)."""
    if self.num_steps is not None:
      return self.num_steps
    return 20 if self.attack == "pgd" else 100


# The keyword arguments evaluate() took before EvalConfig, and where each lives now.
_MOVED = {
    "table": "table", "corruption_names": "corruption_names", "severities": "severities",
    "compile_once": "compile_once", "frost_dir": "frost_dir", "adv_eps": "eps",
    "adv_attack": "attack", "adv_norm": "norm", "adv_steps": "num_steps",
    "adv_apgd_steps": "num_steps", "adv_step_size": "step_size", "adv_restarts": "restarts",
    "adv_square_queries": "num_queries", "adv_images": "attack_images", "seed": "seed",
    "batch_size": "batch_size", "corruptions": "corruptions",
}


def _load_frost(frost_dir: str, images: np.ndarray):
  from drojax.corruptions import textures as textures_lib

  textures = textures_lib.load_frost_textures(frost_dir)  # errors before any work
  if (textures.sizes < np.asarray(images.shape[1:3])).any():
    raise ValueError(f"frost_dir: every frost texture must be at least as large as the "
                     f"images {images.shape[1:3]} after the 0.2 resize; got sizes "
                     f"{textures.sizes.tolist()}.")
  record = {"dir": os.path.abspath(frost_dir), "files": textures_lib.frost_files(frost_dir),
            "scale": 0.2}
  return textures, record


def _corruption_results(model, images, labels, config, key, published_loader, progress,
                        frost, share):
  if config.corruptions == "generated":
    textures, record = frost
    acc = corruption.corruption_accuracy(
        model, images, labels, names=config.corruption_names, severities=config.severities,
        table=config.table, key=key, batch_size=config.batch_size, progress=progress,
        compile_once=config.compile_once, frost_textures=textures, share=share)
    return acc, {"corruption_source": f"generated:{config.table}", "frost_textures": record}
  if config.corruptions == "published":
    acc = corruption.published_corruption_accuracy(
        model, published_loader, names=config.corruption_names, severities=config.severities,
        batch_size=config.batch_size, progress=progress, share=share)
    return acc, {"corruption_source": "published"}
  return {}, {"corruption_source": None}


def _adversarial_results(model, images, labels, config, key, progress, share):
  m = images.shape[0] if config.attack_images is None else min(int(config.attack_images),
                                                               images.shape[0])
  num_steps = config.resolved_num_steps
  if config.attack == "pgd":
    acc = adversarial.adversarial_accuracy(
        model, images[:m], labels[:m], eps=config.eps, num_steps=num_steps,
        step_size=config.step_size, norm=config.norm, restarts=config.restarts,
        key=jax.random.fold_in(key, 2), batch_size=config.batch_size, progress=progress,
        share=share)
    settings = {"attack": "pgd", "norm": config.norm, "num_steps": num_steps,
                "restarts": config.restarts, "start": "uniform", "num_images": m,
                "step_size": ("eps/8" if config.step_size is None else config.step_size)}
    return acc, {"pgd": acc}, settings
  by_attack = adversarial.auto_attack_accuracy(
      model, images[:m], labels[:m], eps=config.eps, attack=config.attack,
      num_steps=num_steps, num_queries=config.num_queries, restarts=config.restarts,
      norm=config.norm, key=jax.random.fold_in(key, 3), batch_size=config.batch_size,
      progress=progress, share=share)
  settings = {"attack": config.attack, "norm": config.norm, "num_steps": num_steps,
              "num_images": m}
  if config.attack == "suite":
    settings.update(attacks="APGD-CE, APGD-T and FAB-T (min(9, K - 1) targets), Square "
                            "(p_init 0.8)",
                    square_queries=config.num_queries)
  else:
    settings["restarts"] = config.restarts
  return by_attack[list(by_attack)[-1]], by_attack, settings


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, *,
             config: EvalConfig | None = None, groups: np.ndarray | None = None,
             train_groups: np.ndarray | None = None,
             published_loader: Callable[[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
             progress: bool = True, share: Share = ALONE, **moved: Any) -> dict[str, Any]:
  """Runs the whole protocol and returns a dict in the ``results.json`` schema.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`~drojax.evaluate.BoundModel`.
    images: test images ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    config: what to measure (None: ``EvalConfig()``, generated corruptions, no attack).
    groups: ``[N]`` group ids (Waterbirds-style), or None.
    train_groups: training group ids for the weighted average.
    published_loader: ``(name, severity) -> (images, labels)`` for
      ``config.corruptions='published'``.
    progress: progress bars.
    share: this process's share of every pass (:mod:`drojax.evaluate.share`): in a
      multi-process run every process calls ``evaluate`` with
      :func:`~drojax.evaluate.share.this_process` and gets the whole test set's numbers.
    **moved: refused; the options evaluate() took before :class:`EvalConfig` (the error names
      the field that holds each now).

  Returns:
    ``clean_accuracy``, ``corruption_source``, ``frost_textures`` (``'procedural'`` or
    ``{'dir', 'files', 'scale'}``; with generated corruptions), ``corruption_accuracy``,
    ``mean_corruption_accuracy``, ``extra_corruption_accuracy``, ``corruption_summary``,
    ``adversarial_accuracy`` (the chosen attack's, for the suite the worst case),
    ``adversarial_by_attack`` (``{'pgd' | 'apgd_ce' | 'apgd_t' | 'fab_t' | 'square': {eps:
    acc}}``, cumulative in the suite's order), ``adversarial`` (settings), ``group_accuracy``,
    ``worst_group_accuracy`` and ``average_group_accuracy`` (the training-proportion-weighted
    average; all three when groups),
    ``eval_seed``, ``num_eval``, ``eval_images_per_process`` (the test images each process
    classified, clean).

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
    >>> x = np.full((4, 8, 8, 3), 200, np.uint8)
    >>> config = EvalConfig(corruption_names=["brightness"], severities=[1], eps=[8 / 255],
    ...                     num_steps=2)
    >>> r = evaluate(f, x, np.ones(4, int), config=config, progress=False)
    >>> r["clean_accuracy"], r["mean_corruption_accuracy"], r["adversarial_accuracy"]
    (1.0, 1.0, {'0.0313725': 1.0})
  """
  for name in moved:
    where = (f"EvalConfig({_MOVED[name]}=...)" if name in _MOVED else None)
    hint = f"; it is now {where}, passed as evaluate(..., config=...)." if where else "."
    raise TypeError(f"evaluate() got an unexpected keyword argument {name!r}{hint}")
  config = EvalConfig() if config is None else config
  if not isinstance(config, EvalConfig):
    raise TypeError(f"config must be an EvalConfig; got {type(config).__name__}.")
  images, labels = check_arrays(images, labels, "evaluate", model)
  if config.corruptions == "published" and published_loader is None:
    raise ValueError("corruptions='published' needs published_loader (see "
                     "drojax.data.published_c.make_loader).")
  frost = (None, "procedural")
  if config.frost_dir is not None:
    frost = _load_frost(config.frost_dir, images)
  key = eval_key(config.seed)
  results: dict[str, Any] = {"num_eval": int(images.shape[0]), "eval_seed": config.seed}
  pred = predict(model, images, batch_size=config.batch_size, progress=progress, desc="clean",
                 share=share)
  spans = batches(images.shape[0], min(config.batch_size, max(images.shape[0], 1)))
  mine = np.zeros((share.count,), np.int64)
  mine[share.index] = sum(spans[b][1] - spans[b][0] for b in share.mine(len(spans)))
  results["eval_images_per_process"] = share.total(mine).tolist()
  results["clean_accuracy"] = float(np.mean(pred == labels)) if len(labels) else math.nan
  acc, source = _corruption_results(model, images, labels, config, jax.random.fold_in(key, 1),
                                    published_loader, progress, frost, share)
  results.update(source)
  summary = corruption.summarize_corruptions(acc)
  results["corruption_accuracy"] = acc
  results["mean_corruption_accuracy"] = summary["mean_corruption_accuracy"]
  results["extra_corruption_accuracy"] = summary["extra_corruption_accuracy"]
  results["corruption_summary"] = summary
  if config.eps:
    acc, by_attack, settings = _adversarial_results(model, images, labels, config, key,
                                                    progress, share)
    results["adversarial_accuracy"] = acc
    results["adversarial_by_attack"] = by_attack
    results["adversarial"] = settings
  else:
    results["adversarial_accuracy"] = {}
  if groups is not None:
    results["group_accuracy"] = group_accuracy(pred, labels, np.asarray(groups),
                                               train_groups=train_groups)
    results["worst_group_accuracy"] = results["group_accuracy"]["worst_group"]
    results["average_group_accuracy"] = results["group_accuracy"]["average"]
  return results


__all__ = ["EvalConfig", "evaluate"]
