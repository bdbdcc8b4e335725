"""PreActResNet-18 (CIFAR variant) with a hidden-layer mixing hook.

He et al., "Identity Mappings in Deep Residual Networks" (2016), in the CIFAR form used by
DRO-Augment and NoisyMix: a 3x3 stem, four stages of two pre-activation basic blocks with
``64, 128, 256, 512`` channels (times ``width / 64``), strides ``1, 2, 2, 2``, global average
pooling and a dense classifier. With ``width=64`` and 10 classes it has 11,171,146 parameters,
the count of the public PyTorch reference (no BatchNorm after the last stage).

Inputs are NHWC float images in [0, 1]; the model normalizes them with ``mean``/``std``.
``mix`` (a :class:`drojax.augment.mixing.MixPlan`) is applied to the normalized input
(position 0) and after each stage ``k`` (position ``k``); without a plan the model is plain.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drojax.augment.mixing import MixPlan, apply_mix_plan
from drojax.models._common import BN_EPSILON, BN_MOMENTUM, input_stem, pooled_head
from drojax.models.conv import conv_impl


class PreActBlock(nn.Module):
  """Pre-activation basic block: ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus the shortcut.

  The projection shortcut (1x1 conv) takes the pre-activated input, as in the reference.
  """

  channels: int
  stride: int = 1
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  fast_input_grad: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        dtype=self.dtype, axis_name=self.bn_axis_name if train else None, name=name)
    conv = lambda ch, k, s, name: nn.Conv(
        ch, (k, k), strides=(s, s), padding=((k // 2, k // 2),) * 2, use_bias=False,
        dtype=self.dtype, conv_general_dilated=conv_impl(self.fast_input_grad), name=name)
    out = nn.relu(norm("bn1")(x))
    if self.stride != 1 or x.shape[-1] != self.channels:
      shortcut = conv(self.channels, 1, self.stride, "shortcut")(out)
    else:
      shortcut = x
    out = conv(self.channels, 3, self.stride, "conv1")(out)
    out = conv(self.channels, 3, 1, "conv2")(nn.relu(norm("bn2")(out)))
    return out + shortcut


class PreActResNet18(nn.Module):
  """PreActResNet-18 for 32x32 (or any size) images.

  Attributes:
    num_classes: number of output logits ``K``.
    width: channels of the stem and first stage (64 in the paper); stages use
      ``width * (1, 2, 4, 8)``.
    mean, std: per-channel normalization applied inside the model (length 1 or ``C``);
      DRO-Augment uses 0.5 / 0.5.
    dtype: computation dtype (``jnp.bfloat16`` on accelerators); parameters stay float32.
    bn_axis_name: mesh axis over which training BatchNorm statistics are averaged (synced BN),
      or ``None`` for per-device statistics. The train step sets it.
    fast_input_grad: route the convolutions through ``drojax.models.conv`` (same values and
      derivatives; the input gradient runs 4-10x faster inside ``lax`` loops on XLA:CPU).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = PreActResNet18(num_classes=10, width=8)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
    >>> model.apply(variables, jnp.zeros((2, 32, 32, 3)), train=False).shape
    (2, 10)
  """

  num_classes: int
  width: int = 64
  mean: Sequence[float] = (0.5, 0.5, 0.5)
  std: Sequence[float] = (0.5, 0.5, 0.5)
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
  fast_input_grad: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mix: MixPlan | None = None) -> jax.Array:
    """Logits ``[B, num_classes]`` (float32) for images ``x [B, H, W, C]`` in [0, 1]."""
    h = input_stem(x, mean=self.mean, std=self.std, dtype=self.dtype, mix=mix)
    h = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                conv_general_dilated=conv_impl(self.fast_input_grad), name="stem")(h)
    for stage, num_blocks in enumerate(self.blocks_per_stage):
      channels = self.width * 2**stage
      for block in range(num_blocks):
        stride = 2 if (stage > 0 and block == 0) else 1
        h = PreActBlock(channels, stride, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                        fast_input_grad=self.fast_input_grad,
                        name=f"stage{stage + 1}_block{block + 1}")(h, train=train)
      h = apply_mix_plan(h, mix, position=stage + 1)
    return pooled_head(h, self.num_classes, dtype=self.dtype)
