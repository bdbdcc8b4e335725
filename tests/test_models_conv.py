"""drojax.models.conv: the same convolution and derivatives as lax.conv_general_dilated.

References: ``lax.conv_general_dilated`` differentiated by JAX's own rules (an implementation
independent of our JVP rule), a float64 NumPy convolution, and central differences of it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from drojax import attacks, models
from drojax.models.conv import conv_general_dilated

# (lhs shape, kernel shape, options); NHWC/HWIO unless dimension_numbers says otherwise.
CASES = {
    "stride1_same": ((2, 6, 6, 3), (3, 3, 3, 4), dict(window_strides=(1, 1), padding="SAME")),
    "stride2_pad": ((2, 7, 7, 3), (3, 3, 3, 4), dict(window_strides=(2, 2),
                                                    padding=((1, 2), (0, 1)))),
    "valid_1x1": ((2, 5, 5, 3), (1, 1, 3, 2), dict(window_strides=(2, 2), padding="VALID")),
    "dilated_groups": ((2, 7, 7, 4), (3, 3, 2, 6), dict(window_strides=(1, 1), padding="SAME",
                                                      rhs_dilation=(2, 1),
                                                      feature_group_count=2)),
    "nchw_oihw": ((2, 3, 6, 6), (4, 3, 3, 3), dict(window_strides=(1, 2), padding="SAME",
                                                  dimension_numbers=("NCHW", "OIHW", "NCHW"))),
}


def _dn(options):
  return options.get("dimension_numbers", ("NHWC", "HWIO", "NHWC"))


def _derivatives(conv, x, k, w):
  """Value and five derivative kinds of ``sum(sin(conv(x, k)) * w)``."""
  f = lambda x, k: jnp.sum(jnp.sin(conv(x, k)) * w)  # noqa: E731
  grad_x = jax.grad(f)
  return {
      "value": conv(x, k),
      "grad_x": grad_x(x, k),
      "grad_k": jax.grad(f, 1)(x, k),
      "jvp_x": jax.jvp(lambda xx: conv(xx, k), (x,), (jnp.cos(x),))[1],
      "forward_over_reverse": jax.jvp(lambda xx: grad_x(xx, k), (x,), (jnp.cos(x),))[1],
      "reverse_over_reverse_k": jax.grad(lambda kk: jnp.sum(grad_x(x, kk) ** 2))(k),
      "vmap_grad_x": jax.vmap(grad_x, (0, None))(x[:, None], k)[:, 0],
  }


@functools.lru_cache(maxsize=None)
def _both(name):
  lhs_shape, rhs_shape, options = CASES[name]
  x = jax.random.normal(jax.random.key(0), lhs_shape)
  k = jax.random.normal(jax.random.key(1), rhs_shape)
  opts = dict(options, dimension_numbers=_dn(options))
  ours = functools.partial(conv_general_dilated, **opts)
  theirs = functools.partial(lax.conv_general_dilated, **opts)
  w = jax.random.normal(jax.random.key(2), jax.eval_shape(theirs, x, k).shape)
  run = jax.jit(lambda x, k, w: (_derivatives(ours, x, k, w), _derivatives(theirs, x, k, w)))
  return run(x, k, w)


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_every_derivative_equal_lax(name):
  ours, theirs = _both(name)
  for kind in theirs:
    scale = float(jnp.max(jnp.abs(theirs[kind])))
    assert scale > 0, kind
    np.testing.assert_allclose(np.asarray(ours[kind]), np.asarray(theirs[kind]),
                               rtol=0, atol=1e-5 * scale, err_msg=f"{name}: {kind}")


def _conv_float64(x, k, stride, pad):
  """NHWC/HWIO convolution by explicit sums, in float64."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), pad[0], pad[1], (0, 0)))
  kh, kw, _, o = k.shape
  ho = (x.shape[1] - kh) // stride[0] + 1
  wo = (x.shape[2] - kw) // stride[1] + 1
  out = np.zeros((x.shape[0], ho, wo, o))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw, :]
      out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, np.asarray(k, np.float64))
  return out


def test_against_float64_convolution_and_central_differences():
  x = np.asarray(jax.random.normal(jax.random.key(3), (1, 5, 5, 2)))
  k = np.asarray(jax.random.normal(jax.random.key(4), (3, 3, 2, 3)))
  w = np.asarray(jax.random.normal(jax.random.key(5), (1, 3, 3, 3)))
  stride, pad = (2, 2), ((1, 1), (1, 1))
  conv = functools.partial(conv_general_dilated, window_strides=stride, padding=pad,
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(conv(x, k)), _conv_float64(x, k, stride, pad),
                             rtol=1e-5, atol=1e-5)
  grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(conv(x, k) * w)))(x))
  h = 1e-4
  numeric = np.zeros_like(x, np.float64)
  for idx in np.ndindex(x.shape):
    e = np.zeros_like(x, np.float64)
    e[idx] = h
    numeric[idx] = (np.sum(_conv_float64(x + e, k, stride, pad) * w)
                    - np.sum(_conv_float64(x - e, k, stride, pad) * w)) / (2 * h)
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", models.model_names())
def test_fast_input_grad_routes_every_convolution_of_the_model_through_conv(name):
  """Tracing only: each of the model's convolutions becomes one custom_jvp call (the models'
  ReLUs are custom_jvp calls too, hence the difference)."""
  x = jnp.zeros((2, 16, 16, 3))
  plain = models.get_model(name, num_classes=5, width=2)
  fast = models.get_model(name, num_classes=5, width=2, fast_input_grad=True)
  variables = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False))
  jaxpr = lambda m: str(jax.make_jaxpr(  # noqa: E731
      lambda v, x: m.apply(v, x, train=False))(variables, x))
  plain_jaxpr, fast_jaxpr = jaxpr(plain), jaxpr(fast)
  num_convs = plain_jaxpr.count("conv_general_dilated[")
  assert num_convs >= 4
  assert fast_jaxpr.count("conv_general_dilated[") == num_convs
  assert (fast_jaxpr.count("custom_jvp_call[") - plain_jaxpr.count("custom_jvp_call[")
          == num_convs)


def test_a_model_with_fast_input_grad_gives_the_same_logits_gradients_and_attacks():
  name, shape = "tiny", (4, 16, 16, 3)
  plain = models.get_model(name, num_classes=5, width=4)
  fast = models.get_model(name, num_classes=5, width=4, fast_input_grad=True)
  x = jax.random.uniform(jax.random.key(6), shape)
  y = jnp.arange(shape[0]) % 5
  variables = plain.init(jax.random.key(7), x, train=False)

  @jax.jit
  def outputs(variables, x):
    out = {}
    for label, model in (("plain", plain), ("fast", fast)):
      logits_fn = lambda z, m=model: m.apply(variables, z, train=False)  # noqa: E731
      loss = lambda z, f=logits_fn: -jnp.sum(  # noqa: E731
          jax.nn.log_softmax(f(z))[jnp.arange(shape[0]), y])
      out[label] = {
          "logits": logits_fn(x),
          "grad": jax.grad(loss)(x),
          "forward_over_reverse": jax.jvp(jax.grad(loss), (x,), (jnp.ones_like(x),))[1],
          "pgd_in_a_loop": attacks.pgd(jax.random.key(8), logits_fn, x, y, eps=8 / 255,
                                       step_size=2 / 255, num_steps=3, unroll=False),
      }
    return out

  out = outputs(variables, x)
  for kind in out["plain"]:
    np.testing.assert_allclose(np.asarray(out["fast"][kind]), np.asarray(out["plain"][kind]),
                               rtol=1e-5, atol=1e-6, err_msg=kind)
  assert fast.apply(variables, x, train=False).shape == (shape[0], 5)


def test_get_model_refuses_a_non_bool_fast_input_grad():
  with pytest.raises(ValueError, match="fast_input_grad must be a bool, got 'no'"):
    models.get_model("tiny", num_classes=3, fast_input_grad="no")
