"""Small convolutional networks: ``SmallCNN`` for 28x28/32x32 images and ``TinyNet`` for tests.

Both take NHWC float images in [0, 1] (grayscale or RGB), normalize inside the model, and have
four stages so a :class:`drojax.augment.mixing.MixPlan` can mix at the input (position 0) or
after stage ``k`` (position ``k``), like PreActResNet-18.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drojax.augment.mixing import MixPlan, apply_mix_plan
from drojax.models._common import BN_EPSILON, BN_MOMENTUM, input_stem, pooled_head
from drojax.models.conv import conv_impl


class _ConvStage(nn.Module):
  """``conv3x3 -> BN -> ReLU`` repeated ``depth`` times, then an optional 2x2 max-pool."""

  channels: int
  depth: int = 1
  pool: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  fast_input_grad: bool = False  # see drojax.models.conv

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in range(self.depth):
      x = nn.Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  dtype=self.dtype, conv_general_dilated=conv_impl(self.fast_input_grad),
                  name=f"conv{i + 1}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                       dtype=self.dtype, axis_name=self.bn_axis_name if train else None,
                       name=f"bn{i + 1}")(x)
      x = nn.relu(x)
    if self.pool:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return x


class SmallCNN(nn.Module):
  """A four-stage CNN for Fashion-MNIST/MNIST/CIFAR-sized inputs.

  Stages have ``width * (1, 2, 4, 4)`` channels (two convolutions in stages 2-4); stages 2-4 end
  with a 2x2 max-pool; then global average pooling, a hidden dense layer of ``4 * width`` and
  the classifier. About 0.55M parameters at ``width=32``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = SmallCNN(num_classes=10, width=8, mean=(0.5,), std=(0.5,))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    >>> model.apply(variables, jnp.zeros((2, 28, 28, 1)), train=False).shape
    (2, 10)
  """

  num_classes: int
  width: int = 32
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  fast_input_grad: bool = False  # see drojax.models.conv

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mix: MixPlan | None = None) -> jax.Array:
    """Logits ``[B, num_classes]`` (float32) for images ``x [B, H, W, C]`` in [0, 1]."""
    h = input_stem(x, mean=self.mean, std=self.std, dtype=self.dtype, mix=mix)
    specs = ((1, 1, False), (2, 2, True), (4, 2, True), (4, 2, True))
    for stage, (mult, depth, pool) in enumerate(specs):
      h = _ConvStage(self.width * mult, depth, pool, dtype=self.dtype,
                     bn_axis_name=self.bn_axis_name, fast_input_grad=self.fast_input_grad,
                     name=f"stage{stage + 1}")(h, train=train)
      h = apply_mix_plan(h, mix, position=stage + 1)
    h = jnp.mean(h, axis=(1, 2))
    h = nn.relu(nn.Dense(4 * self.width, dtype=self.dtype, name="hidden")(h))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h).astype(jnp.float32)


class TinyNet(nn.Module):
  """A very small four-stage CNN for tests only (one conv + BN per stage, stride 2 after 1).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = TinyNet(num_classes=3, width=4)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
    >>> model.apply(variables, jnp.zeros((2, 16, 16, 3)), train=False).shape
    (2, 3)
  """

  num_classes: int
  width: int = 4
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  fast_input_grad: bool = False  # see drojax.models.conv

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mix: MixPlan | None = None) -> jax.Array:
    """Logits ``[B, num_classes]`` (float32) for images ``x [B, H, W, C]`` in [0, 1]."""
    h = input_stem(x, mean=self.mean, std=self.std, dtype=self.dtype, mix=mix)
    for stage in range(4):
      h = nn.Conv(self.width, (3, 3), strides=(1, 1) if stage == 0 else (2, 2),
                  padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                  conv_general_dilated=conv_impl(self.fast_input_grad), name=f"conv{stage + 1}")(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                       dtype=self.dtype, axis_name=self.bn_axis_name if train else None,
                       name=f"bn{stage + 1}")(h)
      h = nn.relu(h)
      h = apply_mix_plan(h, mix, position=stage + 1)
    return pooled_head(h, self.num_classes, dtype=self.dtype)
