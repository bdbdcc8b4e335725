"""drojax.objectives.group (group DRO, V-REx, IRM, Var-DRO + V-REx, weighted ERM) on a linear
softmax model against float64 NumPy transcriptions of the papers' objectives, their parameter
gradients against finite differences, and 8 devices against 1 (a subprocess)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import objectives as O
from drojax import weighting

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_objectives import D, _fns  # noqa: E402  (the linear softmax model, D = 4 inputs)

B, K = 8, 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = np.array([0, 0, 1, 3, 3, 3, 0, 1])  # group 2 absent
ENVS = np.array([0, 1, 1, 0, 1, 1, 0, 1])


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (B, 1, 2, 2, 1))
  y = rng.integers(0, K, B)
  w = rng.normal(size=(D, K))
  return x, np.eye(K)[y], w, y


def _ctx(step=0):
  return O.ObjectiveContext(step=jnp.asarray(step, jnp.int32), ids=jnp.arange(B),
                            axis_name=None, groups=jnp.asarray(GROUPS),
                            environments=jnp.asarray(ENVS))


def _np_losses(x, y, w):
  z = x.reshape(B, D) @ w
  z = z - z.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return -logp[np.arange(B), y], z


def _means(v, ids, n):
  return np.array([v[ids == g].mean() if np.any(ids == g) else 0.0 for g in range(n)])


def _value(objective, w, x, t, step=0, state=None):
  state = objective.init(B) if state is None else state
  value, aux, new_state = objective.apply(jax.random.key(0), state, _fns(w), x, t, _ctx(step))
  return value, aux, new_state


def _check_value_and_grad(objective, reference, x, t, w, *, step=0, state=None):
  """Value vs the float64 reference, and the parameter gradient vs finite differences."""
  with jax.enable_x64(True):
    xj, tj, wj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(w)
    value, aux, _ = _value(objective, wj, xj, tj, step, state)
    np.testing.assert_allclose(value, reference(w), rtol=1e-10)
    grad = jax.grad(lambda w: _value(objective, w, xj, tj, step, state)[0])(wj)
    h, fd = 1e-6, np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
      e = np.zeros_like(w)
      e[idx] = h
      fd[idx] = (reference(w + e) - reference(w - e)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
    return aux


def test_group_dro_matches_algorithm_1():
  x, t, w, y = _data(0)
  q0 = np.array([0.1, 0.2, 0.3, 0.4])
  adj = np.array([0.5, 0.1, 0.2, 0.3])
  obj = O.group_dro(num_groups=4, step_size=0.7, adjustments=adj)
  state = O.GroupDROState(q=q0)  # NumPy float64: stays float64 under enable_x64

  def reference(w):
    losses, _ = _np_losses(x, y, w)
    gl = _means(losses, GROUPS, 4)
    # Algorithm 1 with the weights from the current parameters held constant.
    l0 = _means(_np_losses(x, y, _data(0)[2])[0], GROUPS, 4)
    q = q0 * np.exp(0.7 * (l0 + adj))
    return np.sum(q / q.sum() * gl)

  _check_value_and_grad(obj, reference, x, t, w, state=state)
  _, _, new = _value(obj, jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32),
                     jnp.asarray(t, jnp.float32), state=O.GroupDROState(jnp.asarray(q0, jnp.float32)))
  ref_q = weighting.group_dro_update(jnp.asarray(q0, jnp.float32), jnp.asarray(
      _means(_np_losses(x, y, w)[0], GROUPS, 4), jnp.float32), step_size=0.7,
      adjustments=jnp.asarray(adj, jnp.float32))
  np.testing.assert_allclose(new.q, ref_q, rtol=1e-5)
  np.testing.assert_allclose(O.group_dro(num_groups=4, step_size=1.0).init(None).q, [0.25] * 4)


@pytest.mark.parametrize("step,weight", [(0, 1.0), (5, 40.0)])
def test_vrex(step, weight):
  x, t, w, y = _data(1)
  lam = 40.0
  obj = O.vrex(num_environments=3, penalty_weight=lam, anneal_steps=5)  # env 2 absent

  def reference(w):
    r = _means(_np_losses(x, y, w)[0], ENVS, 2)
    return (r.mean() + weight * np.var(r)) / max(weight, 1.0)

  _check_value_and_grad(obj, reference, x, t, w, step=step)


@pytest.mark.parametrize("step", [0, 5])
def test_irm(step):
  x, t, w, y = _data(2)
  lam = 100.0
  obj = O.irm(num_environments=2, penalty_weight=lam, anneal_steps=3)

  def reference(w):
    losses, z = _np_losses(x, y, w)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    g = (p * z).sum(1) - z[np.arange(B), y]  # d/dw CE(w z, y) at w = 1, per example
    r, pen = _means(losses, ENVS, 2), np.mean(_means(g, ENVS, 2) ** 2)
    weight = lam if step >= 3 else 1.0
    return (r.mean() + weight * pen) / max(weight, 1.0)

  _check_value_and_grad(obj, reference, x, t, w, step=step)


def test_var_dro_vrex_is_var_dro_plus_the_penalty():
  x, t, w, y = _data(3)
  with jax.enable_x64(True):
    xj, tj, wj = (jnp.asarray(a) for a in (x, t, w))
    base = O.var_dro(eps_max=0.5)
    combo = O.var_dro_vrex(num_environments=2, penalty_weight=0.5, eps_max=0.5)
    state = base.init(B)._replace(var=jnp.linspace(0.0, 1.0, B))
    vd, _, vd_state = _value(base, wj, xj, tj, state=state)
    both, _, both_state = _value(combo, wj, xj, tj, state=state)
    r = _means(_np_losses(x, y, w)[0], ENVS, 2)
    np.testing.assert_allclose(both, float(vd) + 0.5 * np.var(r), rtol=1e-10)
    np.testing.assert_allclose(both_state.var, vd_state.var)


def test_weighted_erm():
  x, t, w, y = _data(4)
  weights = np.array([1, 1, 6, 1, 6, 1, 1, 1], np.float64)

  def reference(w):
    losses, _ = _np_losses(x, y, w)
    return np.sum(weights * losses) / weights.sum()

  _check_value_and_grad(O.weighted_erm(weights), reference, x, t, w)


def test_bad_options_and_missing_ids():
  with pytest.raises(ValueError, match="group_dro_step_size must be > 0"):
    O.group_dro(num_groups=4, step_size=0.0)
  with pytest.raises(ValueError, match="vrex compares environments: it needs at least 2"):
    O.vrex(num_environments=1, penalty_weight=1.0)
  with pytest.raises(ValueError, match="irm compares environments"):
    O.irm(num_environments=1, penalty_weight=1.0)
  with pytest.raises(ValueError, match="irm_penalty_weight must be >= 0"):
    O.irm(num_environments=2, penalty_weight=-1.0)
  with pytest.raises(ValueError, match="weights_by_id must be"):
    O.weighted_erm(np.array([1.0, 0.0]))
  x, t, w, _ = _data(0)
  ctx = O.ObjectiveContext(step=jnp.zeros((), jnp.int32), ids=jnp.arange(B), axis_name=None)
  for obj, kind in ((O.group_dro(num_groups=4, step_size=1.0), "group"),
                    (O.vrex(num_environments=2, penalty_weight=1.0), "environment")):
    with pytest.raises(ValueError, match=f"needs {kind} labels, but the batches carry no"):
      obj.apply(None, obj.init(B), _fns(jnp.asarray(w, jnp.float32)),
                jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32), ctx)


def test_eight_devices_equal_one_device():
  """Three train steps of each group objective on 8 forced CPU devices vs 1 (a subprocess);
  some devices hold no example of some groups, so the statistics must be global."""
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "group_multidevice_worker.py")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert [r["method"] for r in rows] == ["group_dro", "vrex", "irm", "var_dro_vrex",
                                         "weighted_erm"]
  for r in rows:
    assert r["max_diff"] < 2e-5 * max(1.0, r["param_scale"]), r
    assert r["penalty_or_q_moved"], r  # the group statistics were not trivial


def test_var_dro_loss_schedule_scales_the_cap():
  """schedule='loss': the cap is eps_max * clip(1 - mean tracked loss / log K, 0, 1), the tracked
  loss read after this step's EMA update (an unseen example's first sighting: its loss); the
  weights are those of the ramp at that cap."""
  x, t, w, y = _data(5)
  losses, _ = _np_losses(x, y, w)
  with jax.enable_x64(True):
    xj, tj, wj = (jnp.asarray(a) for a in (x, t, w))
    state = O.var_dro(eps_max=2.0).init(B)._replace(
        var=jnp.linspace(0.0, 1.0, B), mean=jnp.full(B, 0.3),
        count=jnp.array([1, 1, 1, 1, 1, 1, 0, 0], jnp.int32))
    tracked = np.r_[0.3 + 0.1 * (losses[:6] - 0.3), losses[6:]]  # EMA rate 0.1
    cap = 2.0 * np.clip(1 - tracked.mean() / np.log(K), 0, 1)
    assert 0 < cap < 2.0
    got, aux, _ = _value(O.var_dro(eps_max=2.0, schedule="loss"), wj, xj, tj, state=state)
    ref, _, _ = _value(O.var_dro(eps_max=float(cap)), wj, xj, tj, state=state)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(aux.metrics["eps_max"], cap, rtol=1e-10)
  with pytest.raises(ValueError, match="schedule must be one of"):
    O.var_dro(schedule="cosine")
  with pytest.raises(ValueError, match="must be finite"):
    O.var_dro(eps_max=float("inf"), schedule="loss")
