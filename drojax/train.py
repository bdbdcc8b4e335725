"""The train state, the optimizer, and jitted train / eval steps on a device mesh.

One train step serves every method (a :class:`drojax.methods.Method` is data: augmentation,
criterion, objective with its own state) and every device count: it runs under
``jax.shard_map`` over a ``jax.sharding.Mesh`` with one ``data`` axis. Each device holds
``B / n`` examples of the global batch; BatchNorm statistics are synced over the axis, the
objective is ``pmean``-ed (global-batch semantics, see :mod:`drojax.objectives.base`), so a run
on ``n`` devices matches the run on one device for the same global batch up to float
reassociation.

Data flow of a step (``batch = {"image": uint8 [B, H, W, C], "label": int [B], "id": int [B]}``):
uint8 -> float32 in [0, 1] -> random crop + flip (a key per example, folded from the step key
and the example's global position, so it does not depend on the device count) ->
``method.augment`` -> ``method.objective.apply`` (the model and ``method.criterion`` as closures
over the parameters; returns the objective's new state) -> ``jax.grad`` -> optax update ->
metrics. The objective's state rides in ``TrainState.objective_state``, opaque to the step.

Multi-host: call ``jax.distributed.initialize()`` first, build the mesh over
``jax.devices()``, and feed each process its slice of the global batch with
:func:`drojax.data.shard_batch`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import shard_map
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from drojax._checks import check_static_int, to_unit_float
from drojax import methods as _methods
from drojax import objectives as _objectives

AXIS = "data"
CropFlipFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly (a pytree; all leaves are arrays).

  Attributes:
    params: model parameters (float32).
    batch_stats: BatchNorm running statistics.
    opt_state: optax state.
    step: ``[]`` int32, optimizer steps taken.
    key: ``[2]`` uint32 raw PRNG key data of the run (``jax.random.key_data``); the step's
      randomness is ``fold_in(key, step)``.
    objective_state: the objective's state (``method.objective.init(num_examples)``; a
      pytree, ``None`` for a stateless objective), passed through the step untouched.
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array
  key: jax.Array
  objective_state: Any = None


def make_mesh(num_devices: int | None = None, *, devices: Any = None) -> Mesh:
  """A 1-D mesh with axis ``data`` (axis type Auto) over the first ``num_devices`` devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
  return jax.make_mesh((n,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def make_learning_rate(total_steps: int, *, learning_rate: float = 0.1, warmup_steps: int = 0,
                       schedule: str = "cosine", end_learning_rate: float = 1e-6) -> optax.Schedule:
  """The per-step learning-rate schedule: linear warm-up from 0, then cosine to ``end``.

  ``schedule="constant"`` keeps ``learning_rate`` after the warm-up.

  Example:
    >>> lr = make_learning_rate(100, learning_rate=0.1, end_learning_rate=0.0)
    >>> round(float(lr(0)), 4), round(float(lr(50)), 4), round(float(lr(100)), 4)
    (0.1, 0.05, 0.0)
  """
  check_static_int("total_steps", total_steps, minimum=1)
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if schedule == "cosine":
    main = optax.cosine_decay_schedule(
        learning_rate, total_steps - warmup_steps,
        alpha=min(end_learning_rate / learning_rate, 1.0))
  elif schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  else:
    raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
  if warmup_steps == 0:
    return main
  warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(total_steps: int, *, algorithm: str = "sgd", learning_rate: float = 0.1,
                   momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4,
                   warmup_steps: int = 0, schedule: str = "cosine",
                   end_learning_rate: float = 1e-6) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum, or Adam, with coupled L2 weight decay, PyTorch-style.

  ``update = -lr_t * momentum_sgd(grad + weight_decay * param)``, the DRO-Augment recipe:
  lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4 on every parameter, cosine per step to
  1e-6 (see :func:`make_learning_rate`). ``algorithm="adam"``: ``adam(grad + weight_decay *
  param)`` on the same schedule (``momentum`` and ``nesterov`` are not read).

  Example:
    >>> opt = make_optimizer(10)
    >>> state = opt.init({"w": jnp.ones(3)})
  """
  if algorithm not in ("sgd", "adam"):
    raise ValueError(f"algorithm must be 'sgd' or 'adam', got {algorithm!r}")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
  if not 0 <= momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {momentum}")
  lr = make_learning_rate(total_steps, learning_rate=learning_rate, warmup_steps=warmup_steps,
                          schedule=schedule, end_learning_rate=end_learning_rate)
  parts = []
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.adam(lr) if algorithm == "adam" else
               optax.sgd(lr, momentum=momentum or None, nesterov=nesterov and momentum > 0))
  return optax.chain(*parts)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, int, int]):
  # The model and shape are static (flax modules hash by their fields): the init program
  # compiles once per (model, shape), not once per call (one state per method or run).
  return model.init(key, jnp.zeros((1,) + image_shape, jnp.float32), train=False)


def create_train_state(key: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, int, int], *,
                       method: _methods.Method | None = None,
                       num_examples: int | None = None, mesh: Mesh | None = None) -> TrainState:
  """Initializes parameters, optimizer state, step 0, the run key and the objective's state.

  Args:
    key: PRNG key (typed or raw); split into the init key and the run key.
    model: a drojax model (``model.init(key, x, train=False)``).
    optimizer: from :func:`make_optimizer`.
    image_shape: ``(H, W, C)`` of the training images.
    method: the training method; ``method.objective.init(num_examples)`` gives the objective's
      state (``None`` without a method).
    num_examples: dataset size ``N`` (ids are in ``[0, N)``), for objectives with per-example
      state (they raise a ValueError without it).
    mesh: when given, the state is replicated over it (as the train step returns it).

  Example:
    >>> from drojax.models import TinyNet
    >>> s = create_train_state(jax.random.key(0), TinyNet(num_classes=3), make_optimizer(10),
    ...                        (8, 8, 3))
    >>> int(s.step), s.objective_state is None
    (0, True)
  """
  if len(tuple(image_shape)) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}")
  if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  init_key, run_key = jax.random.split(key)
  image_shape = tuple(image_shape)
  try:
    hash(model)
  except TypeError:  # a module with an unhashable field (a list mean): compile for this call
    variables = jax.jit(lambda k: _init_variables.__wrapped__(model, k, image_shape))(init_key)
  else:
    variables = _init_variables(model, init_key, image_shape)
  params = variables["params"]
  objective_state = None if method is None else method.objective.init(num_examples)
  state = TrainState(params=params, batch_stats=variables.get("batch_stats", {}),
                     opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                     key=jax.random.key_data(run_key),
                     objective_state=objective_state)
  return state if mesh is None else replicate(state, mesh)


def _default_crop_flip() -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Per-example random crop (pad 4) + flip: ``fn(keys [B], images [B, H, W, C])``."""
  from drojax.augment.crop_flip import crop_flip

  def fn(keys, images):
    def draw(k):
      k_off, k_flip = jax.random.split(k)
      return (jax.random.randint(k_off, (2,), 0, 9, dtype=jnp.int32),
              jax.random.bernoulli(k_flip, 0.5))
    offsets, flips = jax.vmap(draw)(keys)
    return crop_flip(images, offsets, flips, padding=4)

  return fn


def _with_axis(model: nn.Module, axis_name: str) -> nn.Module:
  if hasattr(model, "bn_axis_name") and model.bn_axis_name != axis_name:
    return model.clone(bn_axis_name=axis_name)
  return model


# Optional per-example ids the step passes on to the objective (ObjectiveContext).
_GROUP_KEYS = ("group", "environment")


def _check_batch(batch: Mapping[str, Any], num_devices: int, *, need_ids: bool) -> None:
  if not isinstance(batch, Mapping):
    raise TypeError(f"batch must be a dict with 'image', 'label', 'id', got {type(batch).__name__}")
  for k in ("image", "label") + (("id",) if need_ids else ()):
    if k not in batch:
      raise ValueError(f"batch is missing {k!r}: expected keys 'image', 'label', 'id'; got "
                       f"{sorted(batch)}")
  image = batch["image"]
  if image.ndim != 4:
    raise ValueError(f"batch['image'] must be [B, H, W, C], got shape {image.shape}")
  b = image.shape[0]
  if b % num_devices:
    raise ValueError(f"batch size {b} is not divisible by the number of devices {num_devices}: "
                     f"use a batch size that is a multiple of {num_devices}")
  for k in ("label", "id") + _GROUP_KEYS:
    if k in batch and tuple(batch[k].shape) != (b,):
      raise ValueError(f"batch[{k!r}] must have shape ({b},), got {tuple(batch[k].shape)}")


def _global_positions(b: int, axis_name: str) -> jax.Array:
  return jax.lax.axis_index(axis_name) * b + jnp.arange(b, dtype=jnp.int32)


def make_train_step(method: _methods.Method, model: nn.Module, mesh: Mesh, *,
                    optimizer: optax.GradientTransformation,
                    crop_flip: CropFlipFn | bool | None = True,
                    learning_rate_fn: optax.Schedule | None = None,
                    donate: bool = True) -> Callable[[TrainState, Mapping[str, Any]],
                                                     tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the jitted ``train_step(state, batch) -> (state, metrics)`` for ``method``.

  Args:
    method: from :func:`drojax.methods.get_method` (chosen outside ``jit``; never branched on).
    model: a drojax model; BatchNorm is synced over the mesh axis (``bn_axis_name`` is set).
    mesh: 1-D mesh with axis ``data`` (:func:`make_mesh`).
    optimizer: the optax transformation the state was created with.
    crop_flip: ``True`` for the standard pad-4 random crop + horizontal flip, ``False``/``None``
      for none, or ``fn(keys [B], images [B, H, W, C]) -> images`` with one key per example.
    learning_rate_fn: the schedule, to report ``metrics["learning_rate"]`` (optional).
    donate: donate the input state's buffers (do not reuse the state passed in).

  Returns:
    ``train_step(state, batch)`` with ``batch = {"image": [B, H, W, C] uint8 (or float in
    [0, 1]), "label": [B] int, "id": [B] int}`` (and optionally ``"group"``,
    ``"environment"``: [B] int, passed to the objective in its context), ``B`` divisible by the
    mesh size. Metrics are
    replicated scalars: ``loss`` (the objective), ``mean_loss``, ``accuracy`` (first view),
    ``grad_norm``, and the objective's own metrics.

  The state comes back replicated over ``mesh``; pass ``mesh=`` to :func:`create_train_state`
  (or :func:`replicate` the state) so the first call does not copy it. The jitted function
  is ``train_step.jitted`` (for ``.lower(...)``).

  Raises:
    ValueError: at trace time, for a batch size not divisible by the device count or
      missing keys.
  """
  if not isinstance(method, _methods.Method):
    raise TypeError(f"method must be a drojax.methods.Method, got {type(method).__name__}")
  num_devices = mesh.shape[AXIS]
  model = _with_axis(model, AXIS)
  num_classes = int(model.num_classes)
  if crop_flip is True:
    crop_flip = _default_crop_flip()
  elif crop_flip is False:
    crop_flip = None

  def local_step(state: TrainState, batch: dict[str, jax.Array]):
    b = batch["image"].shape[0]
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_crop, k_aug, k_obj = jax.random.split(step_key, 3)
    device = jax.lax.axis_index(AXIS)
    images = to_unit_float("batch['image']", batch["image"])
    if crop_flip is not None:
      keys = jax.vmap(jax.random.fold_in, (None, 0))(k_crop, _global_positions(b, AXIS))
      images = crop_flip(keys, images)
    labels = batch["label"].astype(jnp.int32)
    ids = batch["id"].astype(jnp.int32)
    views = method.augment(jax.random.fold_in(k_aug, device),
                           _methods.Batch(images, labels, ids), num_classes)
    ctx = _objectives.ObjectiveContext(
        step=state.step, ids=ids, axis_name=AXIS,
        **{f"{k}s": batch[k].astype(jnp.int32) for k in _GROUP_KEYS if k in batch})

    def objective(params):
      variables = {"params": params, "batch_stats": state.batch_stats}

      def logits_fn(view_images):
        if views.mix is not None and view_images.shape[0] != b:
          raise ValueError(
              f"the objective evaluated the model on {view_images.shape[0]} of the {b} examples, "
              f"but the views of {method.name!r} mix hidden layers with a plan over the whole "
              f"batch; evaluate it on the whole batch")
        logits, updates = model.apply(variables, _methods.views_to_model_batch(view_images),
                                      train=True, mix=views.mix, mutable=["batch_stats"])
        return logits, {"batch_stats": updates.get("batch_stats", {}), "logits": logits}

      def loss_fn(view_images, targets):
        logits, model_aux = logits_fn(view_images)
        return method.criterion(logits, targets), model_aux

      def eval_logits_fn(view_images):
        return model.apply(variables, _methods.views_to_model_batch(view_images), train=False)

      fns = _objectives.ModelFns(loss=loss_fn, logits=logits_fn, eval_logits=eval_logits_fn)
      value, aux, objective_state = method.objective.apply(
          jax.random.fold_in(k_obj, device), state.objective_state, fns, views.images,
          views.targets, ctx)
      return jax.lax.pmean(value, AXIS), (aux, objective_state)

    (loss, (aux, objective_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    logits = aux.model_aux["logits"][:b]
    metrics = {
        "loss": loss,
        "mean_loss": jax.lax.pmean(jnp.mean(aux.losses), AXIS),
        "accuracy": jax.lax.pmean(jnp.mean((jnp.argmax(logits, -1) == labels).astype(
            jnp.float32)), AXIS),
        "grad_norm": optax.tree.norm(grads),
    }
    for name, value in aux.metrics.items():
      metrics[name] = jax.lax.pmean(jnp.asarray(value, jnp.float32), AXIS)
    if learning_rate_fn is not None:
      metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
    new_state = state.replace(params=params, batch_stats=aux.model_aux["batch_stats"],
                              opt_state=opt_state, step=state.step + 1,
                              objective_state=objective_state)
    return new_state, metrics

  sharded = shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))

  def step_fn(state: TrainState, batch: Mapping[str, Any]):
    _check_batch(batch, num_devices, need_ids=True)
    return sharded(state, {k: batch[k] for k in ("image", "label", "id") + _GROUP_KEYS
                           if k in batch})

  jitted = jax.jit(step_fn, donate_argnums=(0,) if donate else ())
  replicated = NamedSharding(mesh, P())

  def train_step(state: TrainState, batch: Mapping[str, Any]):
    # The step returns the state replicated over the mesh; a state placed otherwise (fresh from
    # create_train_state without a mesh) is moved once, so the second call hits the jit cache.
    return jitted(replicate(state, mesh) if _sharding_of(state) != replicated else state, batch)

  train_step.jitted = jitted  # for ahead-of-time lowering (benchmarks): jitted.lower(...)
  return train_step


def make_eval_step(model: nn.Module, mesh: Mesh) -> Callable[[TrainState, Mapping[str, Any]],
                                                            dict[str, jax.Array]]:
  """Builds the jitted ``eval_step(state, batch) -> outputs`` (inference mode, no crop/flip).

  ``batch`` has ``image`` (uint8 or float in [0, 1]) and ``label``, and optionally ``mask``
  (``[B]`` bool/0-1, to ignore padding rows). Returns ``logits [B, K]`` (sharded over the mesh)
  and replicated sums ``loss_sum`` (cross-entropy), ``correct`` and ``count`` over unmasked rows.
  """
  num_devices = mesh.shape[AXIS]
  from drojax import losses as _losses

  def local_eval(state: TrainState, batch: dict[str, jax.Array]):
    images = to_unit_float("batch['image']", batch["image"])
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                         train=False)
    labels = batch["label"].astype(jnp.int32)
    mask = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones(
        labels.shape, jnp.float32)
    ce = _losses.cross_entropy(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}
    return logits, {k: jax.lax.psum(v, AXIS) for k, v in sums.items()}

  sharded = shard_map(local_eval, mesh=mesh, in_specs=(P(), P(AXIS)),
                      out_specs=(P(AXIS), P()))

  def eval_fn(state: TrainState, batch: Mapping[str, Any]):
    _check_batch(batch, num_devices, need_ids=False)
    keys = ("image", "label") + (("mask",) if "mask" in batch else ())
    logits, sums = sharded(state, {k: batch[k] for k in keys})
    return {"logits": logits, **sums}

  jitted = jax.jit(eval_fn)
  replicated = NamedSharding(mesh, P())

  def eval_step(state: TrainState, batch: Mapping[str, Any]):
    return jitted(replicate(state, mesh) if _sharding_of(state) != replicated else state, batch)

  eval_step.jitted = jitted
  return eval_step


def _sharding_of(state: TrainState) -> Any:
  return getattr(state.step, "sharding", None)


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
  """The state placed on every device of ``mesh`` (how the train step returns it)."""
  return jax.device_put(state, NamedSharding(mesh, P()))


__all__ = ["AXIS", "TrainState", "create_train_state", "make_eval_step", "make_learning_rate",
           "make_mesh", "make_optimizer", "make_train_step", "replicate"]
