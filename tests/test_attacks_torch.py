"""Cross-check of APGD-CE, APGD-T, Square (L-inf) and Square L2 against torchattacks (an
independent PyTorch implementation of the reference code) on one small CNN's weights, on 500
Fashion-MNIST test images: the robust accuracies must agree within 2 points. FAB-T and
AutoAttack's standard version (L-inf and L2) on 300 of them, at the end of the file.

Settings (CI cost): a 2-conv CNN trained for 150 Adam steps with a fixed seed, eps 8/255,
APGD 25 steps, APGD-T 3 targets x 25 steps, Square 500 queries (the same on both sides).
At APGD 50 steps, APGD-T 9 targets and Square 1,000 queries (12 min on the shared 2-core CPU,
too slow for CI) the two agreed within 0.2 points on every attack: APGD-CE 54.0 vs 53.8,
APGD-T 52.8 vs 52.6, Square 62.8 vs 62.8 % (clean 86.2 %). At these settings: 54.2 vs 54.6,
52.8 vs 52.6, 69.4 vs 68.2 %; about 1.5 min for ours and 5 min for torchattacks while the
machine was shared.

Square L2 at L2 eps 1.5 (pixel units over 28x28x1), 500 queries: 35.4 vs 36.2 %; ours
35.4-36.4 over keys 0-4 (11 s per run), torchattacks 130 s. At eps 1.0 ours was about a
point weaker (55.0-56.2 over keys 0-4 vs 53.8, 54.6, 55.0 for seeds 0-2), see
docs/robustness.md.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from drojax import attacks
from tests._shared_data import SHARED_DATA

torch = pytest.importorskip(
    "torch", reason="the torchattacks cross-check needs PyTorch: pip install -e '.[torch]'")
torchattacks = pytest.importorskip(
    "torchattacks", reason="the cross-check needs torchattacks: pip install --no-deps "
    "torchattacks==3.5.1 (its declared torchvision/requests deps are not imported)")

pytestmark = pytest.mark.slow

_N = 500
_EPS = 8 / 255
_STEPS = 25
_TARGETS = 3
_QUERIES = 500
_EPS_L2 = 1.5
_PAD = ((1, 1), (1, 1))


def _apply(p, x):
  dn = ("NHWC", "HWIO", "NHWC")
  h = jax.nn.relu(jax.lax.conv_general_dilated(x, p["c1"], (2, 2), _PAD, dimension_numbers=dn)
                  + p["b1"][None, None, None])
  h = jax.nn.relu(jax.lax.conv_general_dilated(h, p["c2"], (2, 2), _PAD, dimension_numbers=dn)
                  + p["b2"][None, None, None])
  return h.reshape(h.shape[0], -1) @ p["w"] + p["b"][None]


def _data(name, n=None):
  path = SHARED_DATA / f"fashion_mnist_{name}.npz"
  if not path.exists():
    pytest.skip(f"{path} missing (the shared Fashion-MNIST data)")
  d = np.load(path)
  x = d["images"][:n].astype(np.float32) / 255.0
  return x, d["labels"][:n].astype(np.int32)


@pytest.fixture(scope="module")
def model():
  x, y = _data("train")
  k = jax.random.split(jax.random.key(0), 3)
  he = lambda key, shape, fan_in: jax.random.normal(key, shape) * (2.0 / fan_in) ** 0.5
  p = {"c1": he(k[0], (3, 3, 1, 16), 9), "b1": jnp.zeros(16),
       "c2": he(k[1], (3, 3, 16, 32), 144), "b2": jnp.zeros(32),
       "w": he(k[2], (7 * 7 * 32, 10), 7 * 7 * 32), "b": jnp.zeros(10)}
  opt = optax.adam(3e-3)
  state = opt.init(p)

  @jax.jit
  def step(p, state, xb, yb):
    g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
        _apply(q, xb), yb).mean())(p)
    upd, state = opt.update(g, state)
    return optax.apply_updates(p, upd), state

  rng = np.random.default_rng(0)
  for _ in range(150):
    idx = rng.integers(0, len(x), 128)
    p, state = step(p, state, x[idx], y[idx])
  return jax.tree.map(np.asarray, p)


def _torch_model(p):
  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.c1 = torch.nn.Conv2d(1, 16, 3, 2, 1)
      self.c2 = torch.nn.Conv2d(16, 32, 3, 2, 1)
      self.fc = torch.nn.Linear(7 * 7 * 32, 10)

    def forward(self, x):
      h = torch.relu(self.c2(torch.relu(self.c1(x))))
      return self.fc(h.permute(0, 2, 3, 1).reshape(x.shape[0], -1))  # JAX's NHWC flatten

  net = Net()
  with torch.no_grad():
    net.c1.weight.copy_(torch.from_numpy(p["c1"].transpose(3, 2, 0, 1)))
    net.c1.bias.copy_(torch.from_numpy(p["b1"]))
    net.c2.weight.copy_(torch.from_numpy(p["c2"].transpose(3, 2, 0, 1)))
    net.c2.bias.copy_(torch.from_numpy(p["b2"]))
    net.fc.weight.copy_(torch.from_numpy(p["w"].T.copy()))
    net.fc.bias.copy_(torch.from_numpy(p["b"]))
  return net.eval()


def _setup(model, n):
  """``(f, x, y, net, xt, yt, clean)``: the JAX model and its torch port on ``n`` test images."""
  torch.set_num_threads(2)
  x, y = _data("test", n)
  f = lambda z: _apply(model, z)  # pylint: disable=unnecessary-lambda-assignment
  net = _torch_model(model)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    np.testing.assert_allclose(net(xt).numpy(), np.asarray(f(x)), atol=1e-4)  # the port
  clean = float(np.mean(np.argmax(np.asarray(f(x)), -1) == y))
  assert clean > 0.7, clean
  return f, x, y, net, xt, yt, clean


def _torch_robust(net, atk, xt, yt, eps, norm):
  """torchattacks' robust accuracy, after checking its points lie in the eps-ball."""
  adv = atk(xt, yt)
  if norm == "linf":
    assert float((adv - xt).abs().max()) <= eps + 1e-6
  else:
    assert float((adv - xt).flatten(1).norm(dim=1).max()) <= eps * (1 + 1e-5)
  with torch.no_grad():
    return float((net(adv).argmax(1) == yt).float().mean())


def test_robust_accuracies_agree_with_torchattacks(model):
  f, x, y, net, xt, yt, clean = _setup(model, _N)

  def torch_acc(atk, norm="linf"):
    return _torch_robust(net, atk, xt, yt, _EPS if norm == "linf" else _EPS_L2, norm)

  key = jax.random.key(0)
  t0 = time.perf_counter()
  ours = {
      "apgd_ce": float(np.mean(np.asarray(attacks.apgd_robust(
          key, f, x, y, eps=_EPS, num_steps=_STEPS)[1]))),
      "apgd_t": float(np.mean(np.asarray(attacks.apgd_targeted_robust(
          key, f, x, y, eps=_EPS, num_steps=_STEPS, num_targets=_TARGETS)[1]))),
      "square": float(np.mean(np.asarray(attacks.square_robust(
          key, f, x, y, eps=_EPS, num_queries=_QUERIES)[1]))),
      "square_l2": float(np.mean(np.asarray(attacks.square_robust(
          key, f, x, y, eps=_EPS_L2, norm="l2", num_queries=_QUERIES)[1]))),
  }
  t1 = time.perf_counter()
  theirs = {
      "apgd_ce": torch_acc(torchattacks.APGD(net, eps=_EPS, steps=_STEPS, loss="ce", seed=0)),
      "apgd_t": torch_acc(torchattacks.APGDT(net, eps=_EPS, steps=_STEPS, n_classes=_TARGETS + 1,
                                             seed=0)),
      "square": torch_acc(torchattacks.Square(net, eps=_EPS, n_queries=_QUERIES, seed=0)),
      "square_l2": torch_acc(torchattacks.Square(net, norm="L2", eps=_EPS_L2,
                                                 n_queries=_QUERIES, seed=0), "l2"),
  }
  t2 = time.perf_counter()
  print(f"clean {clean:.3f} ours {ours} ({t1 - t0:.1f} s) torchattacks {theirs} "
        f"({t2 - t1:.1f} s)")
  for k in ours:
    assert abs(ours[k] - theirs[k]) <= 0.02, (k, ours[k], theirs[k])
  # The attacks must bite, else agreeing proves little.
  assert ours["square"] < clean - 0.1 and ours["apgd_ce"] < clean - 0.1
  assert ours["square_l2"] < clean - 0.1


# FAB-T and AutoAttack's standard version, at the settings torchattacks' AutoAttack uses:
# 10 iterations for APGD, APGD-T and FAB-T (torchattacks' defaults; AutoAttack's own code uses
# 100), 9 targets, Square 5,000 queries, on 300 images. torchattacks' AutoAttack took about
# 25 minutes per norm on the shared 2-core CPU (ours 2.6 min), too long for CI: that test
# runs only with DROJAX_LONG_CROSSCHECKS=1; its measured numbers are in docs/robustness.md.
_N_AA = 300
_AA_STEPS = 10
_TNORM = {"linf": "Linf", "l2": "L2"}


def _budget(norm):
  return _EPS if norm == "linf" else _EPS_L2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_agrees_with_torchattacks(model, norm):
  f, x, y, net, xt, yt, clean = _setup(model, _N_AA)
  eps = _budget(norm)
  t0 = time.perf_counter()
  ours = float(np.mean(np.asarray(attacks.fab_robust(
      jax.random.key(0), f, x, y, eps=eps, norm=norm, num_steps=_AA_STEPS, targeted=True,
      num_targets=9)[1])))
  t1 = time.perf_counter()
  theirs = _torch_robust(net, torchattacks.FAB(
      net, norm=_TNORM[norm], eps=eps, steps=_AA_STEPS, multi_targeted=True, n_classes=10,
      seed=0), xt, yt, eps, norm)
  t2 = time.perf_counter()
  print(f"FAB-T {norm}: clean {clean:.3f} ours {ours:.4f} ({t1 - t0:.1f} s) torchattacks "
        f"{theirs:.4f} ({t2 - t1:.1f} s)")
  assert abs(ours - theirs) <= 0.02, (ours, theirs)
  assert ours < clean - 0.1  # FAB-T bites, else agreeing proves little


@pytest.mark.skipif(not os.environ.get("DROJAX_LONG_CROSSCHECKS"),
                    reason="torchattacks' AutoAttack takes ~25 min per norm on a 2-core CPU; "
                    "set DROJAX_LONG_CROSSCHECKS=1 to run it")
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_suite_agrees_with_torchattacks(model, norm):
  f, x, y, net, xt, yt, clean = _setup(model, _N_AA)
  eps = _budget(norm)
  t0 = time.perf_counter()
  ours = float(attacks.robust_accuracy_suite(
      jax.random.key(0), f, x, y, eps=eps, norm=norm, num_steps=_AA_STEPS, num_targets=9,
      num_queries=5000)["robust"])
  t1 = time.perf_counter()
  theirs = _torch_robust(net, torchattacks.AutoAttack(
      net, norm=_TNORM[norm], eps=eps, version="standard", n_classes=10, seed=0), xt, yt, eps,
      norm)
  t2 = time.perf_counter()
  print(f"standard suite {norm}: clean {clean:.3f} ours {ours:.4f} ({t1 - t0:.1f} s) "
        f"torchattacks {theirs:.4f} ({t2 - t1:.1f} s)")
  assert abs(ours - theirs) <= 0.02, (ours, theirs)
  assert ours < clean - 0.1
