"""Tests for drojax.models: parameter counts, in-model normalization, the mixing hook."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax.augment.mixing import MixPlan
from drojax import models


def _num_params(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _preact_param_count(width, num_classes, in_ch=3):
  """Independent count from the architecture description (conv weights, BN scale+bias)."""
  total = 9 * in_ch * width  # stem
  cin = width
  for stage in range(4):
    cout = width * 2**stage
    for block in range(2):
      total += 2 * cin  # bn1
      total += 9 * cin * cout + 2 * cout + 9 * cout * cout  # conv1, bn2, conv2
      if cin != cout or (stage > 0 and block == 0):
        total += cin * cout  # 1x1 shortcut
      cin = cout
  return total + cin * num_classes + num_classes


def test_preact_resnet18_has_reference_parameter_count():
  model = models.PreActResNet18(num_classes=10)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert _num_params(variables["params"]) == 11_171_146  # the public PyTorch reference
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("width,classes", [(8, 10), (16, 100)])
def test_preact_resnet18_width_scaling(width, classes):
  model = models.get_model("preact_resnet18", num_classes=classes, width=width)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert _num_params(variables["params"]) == _preact_param_count(width, classes)
  assert _preact_param_count(64, 10) == 11_171_146


def _init(model, shape, seed=0):
  return jax.jit(lambda k: model.init(k, jnp.zeros(shape), train=False))(jax.random.key(seed))


def _apply(model):
  """A jitted eval-mode forward: one compile serves every plan of the same structure."""
  return jax.jit(lambda v, x, mix=None: model.apply(v, x, train=False, mix=mix))


def test_normalization_is_inside_the_model():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  normed = models.TinyNet(num_classes=5, mean=mean, std=std)
  plain = models.TinyNet(num_classes=5, mean=(0.0,), std=(1.0,))
  variables = _init(normed, x.shape)
  x_std = (x.astype(np.float64) - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(
      _apply(normed)(variables, x), _apply(plain)(variables, x_std.astype(np.float32)),
      rtol=1e-5, atol=1e-5)


def _plan(layer, lam, partner, add=0.0, mult=0.0):
  b = len(lam)
  return MixPlan(
      layer=jnp.asarray(layer, jnp.int32), partner=jnp.asarray(partner, jnp.int32),
      lam=jnp.asarray(lam, jnp.float32), add_scale=jnp.full((b,), add, jnp.float32),
      mult_scale=jnp.full((b,), mult, jnp.float32), sparsity=jnp.asarray(0.0, jnp.float32),
      key=jax.random.key(1))


@pytest.mark.parametrize("name,shape", [("tiny", (4, 16, 16, 1)),
                                        ("preact_resnet18", (4, 8, 8, 3))])
def test_mixing_at_input_equals_mixing_the_pixels(name, shape):
  model = models.get_model(name, num_classes=3, width=4, mean=(0.5,) * shape[-1],
                           std=(0.3,) * shape[-1])
  if name == "preact_resnet18":  # one block per stage: the same hook code, half the compile
    model = model.clone(blocks_per_stage=(1, 1, 1, 1))
  x = np.random.default_rng(1).uniform(size=shape).astype(np.float32)
  variables = _init(model, shape)
  lam = np.array([0.3, 0.9, 0.5, 1.0], np.float32)
  partner = np.array([3, 2, 1, 0])
  # Normalization is affine and lam + (1 - lam) = 1, so mixing after it = mixing the pixels.
  x_mix = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
  apply = _apply(model)
  out = apply(variables, x, _plan(0, lam, partner))
  ref = apply(variables, x_mix, _plan(-1, lam, partner))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  plain = _apply(model)(variables, x)
  for no_op in (_plan(-1, lam, partner, add=1.0), _plan(1, np.ones(4), partner)):
    np.testing.assert_allclose(apply(variables, x, no_op), plain, rtol=1e-5, atol=1e-6)
  for layer in range(1, 5):  # each hidden position changes the output when it mixes
    mixed = apply(variables, x, _plan(layer, lam, partner))
    assert np.abs(np.asarray(mixed) - np.asarray(plain)).max() > 1e-6


def test_hidden_mix_matches_manual_split_forward():
  """Mixing after stage 1 of TinyNet equals running stage 1, mixing, and running the rest."""
  model = models.TinyNet(num_classes=3, width=4, mean=(0.0,), std=(1.0,))
  x = np.random.default_rng(2).uniform(size=(4, 16, 16, 3)).astype(np.float32)
  variables = _init(model, x.shape)
  p, s = variables["params"], variables["batch_stats"]
  lam = np.array([0.25, 0.5, 0.75, 0.6], np.float32)
  partner = np.array([1, 0, 3, 2])

  def stage(h, i):
    h = jax.lax.conv_general_dilated(
        h, p[f"conv{i}"]["kernel"], (1, 1) if i == 1 else (2, 2), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bn, st = p[f"bn{i}"], s[f"bn{i}"]
    h = (h - st["mean"][None, None, None]) / jnp.sqrt(st["var"][None, None, None] + 1e-5)
    h = h * bn["scale"][None, None, None] + bn["bias"][None, None, None]
    return jax.nn.relu(h)

  h = stage(jnp.asarray(x), 1)
  h = lam[:, None, None, None] * h + (1 - lam[:, None, None, None]) * h[partner]
  for i in (2, 3, 4):
    h = stage(h, i)
  ref = jnp.mean(h, axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"][None]
  out = _apply(model)(variables, x, _plan(1, lam, partner))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_train_mode_updates_batch_stats_with_torch_momentum():
  model = models.TinyNet(num_classes=3, width=4, mean=(0.0,), std=(1.0,))
  x = np.random.default_rng(3).uniform(size=(8, 16, 16, 3)).astype(np.float32)
  variables = _init(model, x.shape)
  _, new = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  conv = jax.lax.conv_general_dilated(
      x, variables["params"]["conv1"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  batch_mean = np.asarray(conv, np.float64).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(new["batch_stats"]["bn1"]["mean"], 0.1 * batch_mean,
                             rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_is_close_and_keeps_float32_params():
  x = np.random.default_rng(4).uniform(size=(4, 16, 16, 3)).astype(np.float32)
  f32 = models.get_model("tiny", num_classes=10, width=8)
  bf16 = models.get_model("tiny", num_classes=10, width=8, dtype=jnp.bfloat16)
  variables = _init(f32, x.shape)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(jax.eval_shape(
      lambda: bf16.init(jax.random.key(0), x, train=False))))
  out32 = _apply(f32)(variables, x)
  out16 = _apply(bf16)(variables, x)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()) + 1e-2)


def test_small_cnn_accepts_gray_and_rgb():
  for shape, mean in (((2, 28, 28, 1), (0.5,)), ((2, 32, 32, 3), (0.5, 0.5, 0.5))):
    model = models.get_model("small_cnn", num_classes=10, width=4, mean=mean, std=mean)
    out = _apply(model)(_init(model, shape), jnp.zeros(shape))
    assert out.shape == (2, 10)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="did you mean 'tiny'|Did you mean 'tiny'"):
    models.get_model("tinny", num_classes=10)
  with pytest.raises(ValueError, match="num_classes"):
    models.get_model("tiny", num_classes=0)
  model = models.TinyNet(num_classes=3)
  with pytest.raises(TypeError, match="float"):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.uint8), train=False)
  with pytest.raises(ValueError, match="NHWC"):
    model.init(jax.random.key(0), jnp.zeros((16, 16, 3)), train=False)
  with pytest.raises(ValueError, match="mean/std"):
    models.TinyNet(num_classes=3, mean=(0.1, 0.2)).init(
        jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
