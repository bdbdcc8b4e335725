"""What an objective is, what it receives, and the mean (ERM) objective.

An objective is data, optax-style: a pair of pure functions over its own state,

* ``init(num_examples) -> state`` (``None`` for a stateless objective; Var-DRO's variance
  tracker has one slot per training example, hence the argument);
* ``apply(key, state, model, images, targets, ctx) -> (value, ObjectiveAux, new_state)``.

``model`` is a :class:`ModelFns`: the per-example loss and the logits as functions of the input
images, closures over the parameters (the train step builds them), so an objective may run the
model as often as it needs (the W-DRO penalty differentiates the loss with respect to the
images, adversarial training maximizes it over them) without touching Flax state. ``value`` is a
scalar whose ``lax.pmean`` over ``ctx.axis_name`` is the global-batch objective: either a local
contribution (the mean of this device's losses) or a value that is already global (Var-DRO,
KL-DRO and CVaR gather the batch's losses over the mesh and return the same scalar on every
device). The train step differentiates ``pmean(value)`` with respect to the parameters and
carries ``new_state`` in ``TrainState.objective_state`` without looking at it.

Shapes (per device, B examples, V views, K classes); images are float32 NHWC in [0, 1]:
``images [B, V, H, W, C]`` (example-major views), ``targets [B, K]`` soft targets, logits
``[V * B, K]`` view-major (rows ``v*B .. v*B + B - 1`` are view ``v``).

Imports JAX only.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class ObjectiveContext(NamedTuple):
  """What an objective may need besides the model, the views and the key."""

  step: jax.Array  # [] int32 optimizer step (schedules such as Var-DRO's eps_max ramp)
  ids: jax.Array  # [B] int32 dataset example ids
  axis_name: str | None  # mesh axis the global batch is split over, or None
  groups: jax.Array | None = None  # [B] int32 group ids, where the data has them
  environments: jax.Array | None = None  # [B] int32 environment ids, where the data has them


class ObjectiveAux(NamedTuple):
  """Diagnostics returned next to the scalar objective."""

  losses: jax.Array  # [B] per-example training losses (unweighted)
  model_aux: Any  # ModelFns.loss/logits's aux of the call the train step reports (opaque)
  metrics: dict[str, jax.Array]  # scalar diagnostics: penalty, weight entropy, ...


class ModelFns(NamedTuple):
  """The model as functions of the input images (closures over the parameters).

  Attributes:
    loss: ``(images [B, V, H, W, C], targets [B, K]) -> (losses [B], model_aux)``: the
      method's per-example criterion on a training-mode forward pass (BatchNorm with batch
      statistics, the method's hidden-layer mixing plan applied). ``model_aux`` is opaque to
      objectives (the train step reads the new BatchNorm statistics and logits from it).
    logits: ``(images [B, V, H, W, C]) -> (logits [V * B, K], model_aux)``: the same
      training-mode forward pass, without the criterion.
    eval_logits: ``(images [B, V, H, W, C]) -> logits [V * B, K]``: an inference-mode pass
      (BatchNorm with its running statistics, no mixing plan, no state change).
  """

  loss: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
  logits: Callable[[jax.Array], tuple[jax.Array, Any]]
  eval_logits: Callable[[jax.Array], jax.Array]


InitFn = Callable[[int | None], Any]
ApplyFn = Callable[[jax.Array, Any, ModelFns, jax.Array, jax.Array, ObjectiveContext],
                   tuple[jax.Array, ObjectiveAux, Any]]


class Objective(NamedTuple):
  """An objective: ``init`` and ``apply`` (see the module docstring)."""

  init: InitFn
  apply: ApplyFn


def stateless_init(num_examples: int | None = None) -> None:
  """The ``init`` of an objective without state."""
  del num_examples
  return None


def all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Concatenates ``x [B, ...]`` over the mesh axis (device order); identity without one.

  Built from ``psum`` of zero-padded slots, so the result is device-invariant (equal on every
  device) and differentiable: the cotangent of a slot flows back to the device that owns it.
  """
  if axis_name is None:
    return x
  n = jax.lax.axis_size(axis_name)
  b = x.shape[0]
  slot = jax.lax.axis_index(axis_name) * b
  padded = jnp.zeros((n * b,) + x.shape[1:], x.dtype)
  padded = jax.lax.dynamic_update_slice_in_dim(padded, x, slot, axis=0)
  return jax.lax.psum(padded, axis_name)


def weight_entropy(w: jax.Array) -> jax.Array:
  """``-sum_i w_i log w_i`` over ``w [N]`` (0 log 0 = 0)."""
  return -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0))


def mean() -> Objective:
  """ERM: the mean per-example loss (local; its ``pmean`` is the global mean). No state."""

  def apply(key, state, model, images, targets, ctx):
    del key, ctx
    losses, model_aux = model.loss(images, targets)
    return jnp.mean(losses), ObjectiveAux(losses, model_aux, {}), state

  return Objective(stateless_init, apply)
