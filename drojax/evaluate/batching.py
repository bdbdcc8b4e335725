"""The evaluator's plumbing: models as ``(apply_fn, variables)``, host-side batching with a
padded last batch, the jitted predictor, checks and progress bars.

Images arrive as uint8 NHWC (divided by 255) or float NHWC in [0, 1]; the library works in
float32 [0, 1]. A model is either

* any callable ``logits_fn(x [B, H, W, C] float32 in [0, 1]) -> [B, K]`` (eval mode); it is
  wrapped in ``jax.jit`` (closed-over parameters become compile-time constants), or
* a :class:`BoundModel` ``(apply_fn, variables)``: ``apply_fn(variables, x)`` is jitted with the
  variables as *arguments*, the better choice for real models (no constant folding of
  millions of parameters, one compilation reused across batches, corruptions and eps).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from drojax import _checks

EVAL_SEED = 20190  # the fixed seed of every evaluation key (corruptions and attack starts)


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


def bind(model: Any, variables: Any) -> BoundModel:
  """A ``drojax.models`` classifier in eval mode with its variables, ready to evaluate.

  Its convolutions are ``drojax.models.conv``'s (the same numbers), whose input gradients the
  attacks' loops need fast.

  Args:
    model: a Flax module from ``drojax.models.get_model`` (it has ``fast_input_grad``).
    variables: ``{'params': ..., 'batch_stats': ...}`` for ``model.apply``.

  Returns:
    ``BoundModel`` with ``logits [B, K] = model.apply(variables, x [B, H, W, C], train=False)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from drojax import models
    >>> net = models.get_model("small_cnn", num_classes=3, width=2)
    >>> x = jnp.zeros((1, 8, 8, 3))
    >>> bind(net, net.init(jax.random.key(0), x, train=False))(x).shape
    (1, 3)
  """
  if not hasattr(model, "fast_input_grad"):
    raise ValueError(f"model must be a drojax.models module (it has fast_input_grad), got "
                     f"{type(model).__name__}; wrap another function in BoundModel")
  model = model.clone(fast_input_grad=True)
  return BoundModel(lambda v, x: model.apply(v, x, train=False), variables)


@functools.lru_cache(maxsize=64)
def _ignoring_variables(logits_fn: Callable) -> Callable:
  # One wrapper per callable, so the jit caches keyed on apply_fn hit on the second call.
  return lambda variables, x: logits_fn(x)


def as_apply(model: Model) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """``(apply_fn, variables)`` with ``logits = apply_fn(variables, x)`` for either kind of model.

  A plain callable gets ``variables=None`` and an ``apply_fn`` that ignores them (its
  parameters stay compile-time constants); the same callable always gets the same
  ``apply_fn``, so jitted functions keyed on it compile once.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.

  Returns:
    ``(apply_fn, variables)``.

  Example:
    >>> f = lambda x: x
    >>> a, v = as_apply(f)
    >>> v is None and a is as_apply(f)[0]
    True
  """
  if isinstance(model, BoundModel):
    return model.apply_fn, model.variables
  if not callable(model):
    raise TypeError(f"model must be a callable x -> logits or a BoundModel; got "
                    f"{type(model).__name__}.")
  return _ignoring_variables(model), None


def check_arrays(images: Any, labels: Any | None, fn: str,
                 model: Model | None = None) -> tuple[np.ndarray, np.ndarray | None]:
  """``images [N, H, W, C]`` uint8 or float in [0, 1] (finite) and integer ``labels [N]`` (or
  None), in ``[0, K)`` for the ``model``'s K outputs when it is given, else an error naming
  ``fn``; returns them (labels as NumPy). Nothing is computed: K comes from ``eval_shape``."""
  if not hasattr(images, "shape") or len(images.shape) != 4:
    raise ValueError(f"{fn}: images must be an array [N, H, W, C]; got "
                     f"{getattr(images, 'shape', type(images).__name__)}.")
  dt = np.dtype(images.dtype)
  if dt != np.uint8 and not np.issubdtype(dt, np.floating):
    raise TypeError(f"{fn}: images must be uint8 (0..255) or float in [0, 1]; got dtype {dt}.")
  if dt != np.uint8:
    _checks.check_unit_range(f"{fn}: images", images)
  if labels is None:
    return images, None
  labels = np.asarray(labels)
  if labels.shape != (images.shape[0],):
    raise ValueError(f"{fn}: labels must have shape [N] = [{images.shape[0]}]; got "
                     f"{labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"{fn}: labels must be integers; got dtype {labels.dtype}.")
  if model is not None:
    apply_fn, variables = as_apply(model)
    k = jax.eval_shape(apply_fn, variables,
                       jax.ShapeDtypeStruct((1,) + tuple(images.shape[1:]), jnp.float32))
    _checks.check_labels(f"{fn}: labels", labels, k.shape[-1])
  return images, labels


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
  """``[(start, stop)]`` covering ``range(n)`` in steps of ``batch_size``."""
  return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def padded(batch: np.ndarray, size: int) -> np.ndarray:
  """Pads the first axis to ``size`` by repeating the last row (keeps shapes static)."""
  n = batch.shape[0]
  if n == size:
    return batch
  reps = np.repeat(batch[-1:], size - n, axis=0)
  return np.concatenate([batch, reps], axis=0)


def float_batch(images: np.ndarray, start: int, stop: int, size: int) -> np.ndarray:
  """Rows ``start:stop`` of ``images`` as float32 in [0, 1], padded to ``size`` rows."""
  return padded(_checks.to_unit_float("images", np.asarray(images[start:stop])), size)


def progress_bar(total: int, desc: str, progress: bool):
  """A tqdm bar over ``total`` batches, disabled unless ``progress``."""
  return tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False,
              dynamic_ncols=True)


@functools.lru_cache(maxsize=64)
def _jit_predict(apply_fn: Callable) -> Callable:
  return jax.jit(lambda v, x: jnp.argmax(apply_fn(v, x), axis=-1))


def predictor(model: Model) -> Callable[[np.ndarray], np.ndarray]:
  """``x float32 [B, H, W, C] -> predicted labels [B]`` as NumPy, jitted once per model.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.

  Returns:
    The predictor.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> predictor(lambda x: x.reshape(x.shape[0], -1))(np.eye(3, dtype=np.float32
    ...                                                        ).reshape(3, 1, 1, 3)).tolist()
    [0, 1, 2]
  """
  apply_fn, variables = as_apply(model)
  fn = _jit_predict(apply_fn)
  return lambda x: np.asarray(fn(variables, x))


__all__ = ["EVAL_SEED", "BoundModel", "Model", "bind", "eval_key", "as_apply", "check_arrays",
           "batches", "padded", "float_batch", "progress_bar", "predictor"]
