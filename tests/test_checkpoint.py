"""Tests for drojax.checkpoint: exact round trip, keep-last-K, corrupt-latest fallback."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import checkpoint, train, weighting


def _state(seed=0):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  opt = train.make_optimizer(10)
  tracker = weighting.init_tracker(5)._replace(var=jnp.asarray(rng.uniform(size=5), jnp.float32))
  return train.TrainState(params=params, batch_stats={"m": jnp.zeros(2)},
                          opt_state=opt.init(params), step=jnp.asarray(7, jnp.int32),
                          key=jax.random.key_data(jax.random.key(seed)), objective_state=tracker)


def _assert_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_position(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / "ck", max_to_keep=2)
  assert ckpt.restore_latest(_state()) is None
  state = _state(1)
  ckpt.save(state, meta={"epoch": 3, "batch": 11})
  restored = ckpt.restore_latest(_state(2))  # a different state only gives the structure
  assert restored.step == 7 and restored.meta["epoch"] == 3 and restored.meta["batch"] == 11
  _assert_equal(restored.state, state)
  ckpt.close()


def test_keeps_last_k(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=2)
  state = _state()
  for s in (1, 2, 3, 4):
    ckpt.save(state.replace(step=jnp.asarray(s, jnp.int32)), meta={"epoch": 0, "batch": s})
  assert ckpt.all_steps() == [3, 4]
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpoint.Checkpointer(tmp_path, max_to_keep=0)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_corrupt_latest_falls_back_to_previous_with_a_warning(tmp_path, damage):
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=3)
  good = _state(1).replace(step=jnp.asarray(1, jnp.int32))
  ckpt.save(good, meta={"epoch": 0, "batch": 1})
  ckpt.save(_state(2).replace(step=jnp.asarray(2, jnp.int32)), meta={"epoch": 0, "batch": 2})
  latest = os.path.join(ckpt.directory, "2")
  files = [os.path.join(d, f) for d, _, fs in os.walk(latest) for f in fs]
  assert files
  for path in files:  # damage every file of the latest checkpoint
    if damage == "delete":
      os.remove(path)
    else:
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    restored = checkpoint.Checkpointer(tmp_path).restore_latest(_state(0))
  assert restored is not None and restored.step == 1
  _assert_equal(restored.state, good)
  assert any("step 2" in str(w.message) and "falling back" in str(w.message) for w in caught)
