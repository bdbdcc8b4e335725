"""drojax.groups (group losses, group-DRO update, V-REx and IRMv1 penalties) against float64 NumPy
transcriptions of the papers' formulas and finite differences."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from drojax import groups as G
from drojax import losses, weighting


def _np_group_losses(x, g, n):
  out = np.zeros(n)
  for k in range(n):
    if np.any(g == k):
      out[k] = np.mean(np.asarray(x, np.float64)[g == k])
  return out


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_irm_penalty(z, y):
  """(d/dw mean CE(w z, y) at w=1)^2 = (mean_i (p_i . z_i - z_{i, y_i}))^2, in float64."""
  z = np.asarray(z, np.float64)
  p = np.exp(_np_log_softmax(z))
  g = (p * z).sum(-1) - z[np.arange(len(y)), y]
  return np.mean(g) ** 2


class GroupsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), num_groups=st.sampled_from([1, 3, 5]))
  def test_group_losses_vs_numpy(self, seed, num_groups):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=8).astype(np.float32)
    g = rng.integers(0, num_groups, size=8).astype(np.int32)
    fn = self.variant(lambda x, g: G.group_losses(x, g, num_groups))
    np.testing.assert_allclose(fn(x, g), _np_group_losses(x, g, num_groups), rtol=1e-6,
                               atol=1e-6)

  def test_group_losses_empty_groups_and_gradient(self):
    x = jnp.array([1.0, 2.0, 6.0])
    g = jnp.array([0, 2, 2])
    np.testing.assert_allclose(losses.group_losses(x, g, 4), [1.0, 0.0, 4.0, 0.0])
    jac = jax.jacobian(lambda x: G.group_losses(x, g, 4))(x)
    np.testing.assert_allclose(jac, [[1, 0, 0], [0, 0, 0], [0, 0.5, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(G.group_counts(g, 4), [1, 0, 2, 0])

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), eta=st.sampled_from([0.01, 0.5, 3.0]),
                    adjust=st.booleans())
  def test_group_dro_update_vs_algorithm_1(self, seed, eta, adjust):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(4)).astype(np.float32)
    ell = rng.uniform(0, 3, size=4).astype(np.float32)
    counts = rng.integers(1, 100, size=4)
    adj = G.group_adjustments(counts, adjustment=2.0) if adjust else None
    # Algorithm 1: q_g <- q_g exp(eta (l_g + C / sqrt(n_g))); q <- q / sum(q).
    lossed = ell.astype(np.float64) + (2.0 / np.sqrt(counts) if adjust else 0.0)
    ref = q.astype(np.float64) * np.exp(eta * lossed)
    ref /= ref.sum()
    fn = self.variant(lambda q, l: weighting.group_dro_update(q, l, step_size=eta,
                                                              adjustments=adj))
    np.testing.assert_allclose(fn(q, ell), ref, rtol=2e-5, atol=1e-7)

  def test_group_dro_update_no_overflow(self):
    q = weighting.group_dro_update(jnp.array([0.5, 0.5]), jnp.array([1000.0, 999.0]),
                                   step_size=10.0)
    np.testing.assert_allclose(q, [1 / (1 + np.exp(-10.0)), 1 / (1 + np.exp(10.0))], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), e=st.sampled_from([2, 3, 6]))
  def test_vrex_penalty_is_population_variance(self, seed, e):
    r = np.random.default_rng(seed).uniform(0, 2, size=e).astype(np.float32)
    np.testing.assert_allclose(self.variant(losses.vrex_penalty)(r),
                               np.var(r.astype(np.float64)), rtol=1e-5, atol=1e-7)
    mask = np.arange(e) != 0
    masked = self.variant(lambda r, m: G.vrex_penalty(r, mask=m))(r, mask)
    np.testing.assert_allclose(masked, np.var(r[1:].astype(np.float64)), rtol=1e-5, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), k=st.sampled_from([2, 3]))
  def test_irm_penalty_closed_form(self, seed, k):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(6, k)).astype(np.float32) * 2
    y = rng.integers(0, k, size=6).astype(np.int32)
    np.testing.assert_allclose(self.variant(losses.irm_penalty)(z, y), _np_irm_penalty(z, y),
                               rtol=1e-4, atol=1e-6)

  def test_irm_penalty_vs_finite_differences_float64(self):
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(5, 3)), rng.integers(0, 3, size=5)
    with jax.enable_x64(True):
      def risk(w):
        return np.mean(-_np_log_softmax(w * z)[np.arange(5), y])
      h = 1e-5
      fd = ((risk(1 + h) - risk(1 - h)) / (2 * h)) ** 2
      got = G.irm_penalty(jnp.asarray(z), jnp.asarray(y))
      self.assertEqual(got.dtype, jnp.float64)
      np.testing.assert_allclose(got, fd, rtol=1e-7)
      # Soft targets: one-hot probabilities give the same penalty.
      soft = np.eye(3)[y]
      np.testing.assert_allclose(G.irm_penalty(jnp.asarray(z), jnp.asarray(soft)), fd, rtol=1e-7)
      # The penalty's gradient w.r.t. the logits (what IRM trains on) vs finite differences.
      jax.test_util.check_grads(lambda z: G.irm_penalty(z, jnp.asarray(y)), (jnp.asarray(z),),
                                order=1, modes=("rev",), eps=1e-5)

  def test_bad_inputs(self):
    with pytest.raises(ValueError, match=r"groups must lie in \[0, 3\)"):
      G.group_losses(jnp.ones(2), jnp.array([0, 3]), 3)
    with pytest.raises(ValueError, match="num_groups must be an int >= 1"):
      G.group_losses(jnp.ones(2), jnp.array([0, 0]), 0)
    with pytest.raises(ValueError, match="groups must be integer ids of shape"):
      G.group_losses(jnp.ones(2), jnp.array([0.0, 1.0]), 2)
    for eta in (0.0, -1.0):
      with pytest.raises(ValueError, match="step_size"):
        G.group_dro_update(jnp.array([0.5, 0.5]), jnp.ones(2), step_size=eta)
    for q in ([0.5, 0.6], [1.5, -0.5], [0.5, np.nan]):
      with pytest.raises(ValueError, match=r"q must hold probability rows"):
        G.group_dro_update(jnp.array(q), jnp.ones(2), step_size=1.0)
      # Traced, it cannot be refused: the weights are NaN (the project's convention).
      got = jax.jit(lambda q: G.group_dro_update(q, jnp.ones(2), step_size=1.0))(jnp.array(q))
      assert np.all(np.isnan(got))
    with pytest.raises(ValueError, match="group_losses must have the shape of q"):
      G.group_dro_update(jnp.array([0.5, 0.5]), jnp.ones(3), step_size=1.0)
    with pytest.raises(ValueError, match="every group needs a training example"):
      G.group_adjustments([3, 0], adjustment=1.0)
    with pytest.raises(ValueError, match="risks must have rank 1"):
      G.vrex_penalty(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"labels \(class ids for 2 classes\) must lie in \[0, 2\)"):
      G.irm_penalty(jnp.zeros((2, 2)), jnp.array([0, 2]))


@pytest.mark.parametrize("step, weight", [(0, 1e4), (4, 1e4), (5, 1e4), (9, 0.5), (9, 0.0)])
def test_annealed_penalty_closed_form(step, weight):
  """(R + lam P) / max(lam, 1), lam = 1 before step 5 and the weight from it (float64)."""
  risk, penalty = 0.7, 0.3
  lam = 1.0 if step < 5 else weight
  want = (risk + lam * penalty) / max(lam, 1.0)
  fn = jax.jit(lambda t: G.annealed_penalty(jnp.float32(risk), jnp.float32(penalty), t,
                                            weight=weight, anneal_steps=5))
  np.testing.assert_allclose(fn(jnp.int32(step)), want, rtol=1e-6)


def test_annealed_penalty_refuses_bad_options():
  with pytest.raises(ValueError, match="anneal_steps must be"):
    G.annealed_penalty(1.0, 1.0, 0, weight=1.0, anneal_steps=-1)
  with pytest.raises(ValueError, match="weight must be >= 0 and finite"):
    G.annealed_penalty(1.0, 1.0, 0, weight=float("nan"), anneal_steps=0)


# ---------------------------------------------------------------- host side: data, JTT, selection

def _toy(groups, environments=None, name="toy"):
  import types

  return types.SimpleNamespace(groups=None if groups is None else np.asarray(groups),
                               environments=environments, name=name)


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(st.lists(st.integers(0, 4), min_size=1, max_size=40))
def test_check_training_data_counts_by_hand(ids):
  expected = [ids.count(g) for g in range(max(ids) + 1)]  # counted in Python, by hand
  if 0 in expected:
    with pytest.raises(ValueError, match=r"groups \[.*\] of the .* have no training example"):
      G.check_training_data(_toy(ids), "group")
  else:
    assert G.check_training_data(_toy(ids), "group").tolist() == expected
    assert G.check_training_data(_toy(ids), "group", group_counts=expected).tolist() == expected


def test_check_training_data_refusals_and_environments():
  ds = _toy([0, 1, 2, 2, 1, 0])
  with pytest.raises(ValueError, match="num_groups=2, but the training data has groups ids up "
                     "to 2"):
    G.check_training_data(ds, "group", count=2)
  with pytest.raises(ValueError, match=r"group_counts=\(1, 1, 4\), but the training data has "
                     r"\(2, 2, 2\)"):
    G.check_training_data(ds, "group", group_counts=(1, 1, 4))
  with pytest.raises(ValueError, match="needs environment labels, but the training data toy "
                     "has none"):
    G.check_training_data(_toy(None), "environment")
  with pytest.raises(ValueError, match="it needs at least 2, the training data has 1"):
    G.check_training_data(_toy([0, 0]), "environment")
  with pytest.raises(ValueError, match="need must be one of"):
    G.check_training_data(ds, "groups")
  # Environments where the data has them; else the groups.
  envs = _toy([0, 1, 2, 2, 1, 0], environments=np.array([1, 1, 1, 0, 0, 0]))
  assert G.training_ids(envs, "environment")[1] == "environments"
  assert G.check_training_data(envs, "environment").tolist() == [3, 3]
  assert G.check_training_data(ds, "environment").tolist() == [2, 2, 2]


def test_jtt_weights_by_hand():
  ids = np.array([4, 0, 2, 3])
  errors = np.array([True, False, True, False])
  expected = np.ones(6, np.float32)
  expected[4] = expected[2] = 5.0  # the misclassified examples' ids, by hand
  np.testing.assert_array_equal(G.jtt_weights(ids, errors, num_examples=6, lambda_up=5.0),
                                expected)
  with pytest.raises(ValueError, match="lambda_up"):
    G.jtt_weights(ids, errors, num_examples=6, lambda_up=0.0)
  with pytest.raises(ValueError, match=r"must be \[N\] integer ids and \[N\] bool"):
    G.jtt_weights(ids, errors.astype(int), num_examples=6, lambda_up=5.0)


def test_select_by_rule():
  runs = [{"accuracy": 0.9, "group_accuracy": {"worst_group": 0.5}},
          {"accuracy": 0.7, "group_accuracy": {"worst_group": 0.7}},
          {"accuracy": 0.9, "group_accuracy": {"worst_group": 0.7}}]
  assert G.select(runs, "worst_group") == 1  # ties: the first
  assert G.select(runs, "average") == 0
  assert [G.selection_score(r, "worst_group") for r in runs] == [0.5, 0.7, 0.7]
  assert [G.selection_score(r, "average") for r in runs] == [0.9, 0.7, 0.9]
  with pytest.raises(ValueError, match="by must be one of"):
    G.select(runs, "best")
  with pytest.raises(ValueError, match="nothing to select from"):
    G.select([], "average")


def test_summarize_by_group_by_hand():
  var = np.arange(10.0)
  weight = np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, np.nan])
  groups = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
  flipped = np.array([False] * 8 + [True, False])
  out = G.summarize_by_group(var, weight, groups=groups, flipped=flipped)
  assert out["var_group1"] == 8.0 and out["weight_group1"] == 1.5  # nan: not in a batch
  assert out["minority_share_top10"] == 1.0 and out["minority_share_all"] == 0.3
  assert out["flipped_share_top10"] == 0.0 and out["var_flipped"] == 8.0
  np.testing.assert_allclose(out["weight_clean"], 1.0)
  assert set(G.summarize_by_group(var, weight)) == set()
  with pytest.raises(ValueError, match=r"var and weight must both be \[N\]"):
    G.summarize_by_group(var, weight[:3])
