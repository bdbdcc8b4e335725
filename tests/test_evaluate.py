"""Tests for drojax.evaluate against float64 NumPy references written here."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from drojax import evaluate

H = W = 8
K = 4


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(H * W * 3, K))
  b = rng.normal(size=K) * 0.1
  images = rng.integers(0, 256, size=(10, H, W, 3), dtype=np.uint8)
  labels = rng.integers(0, K, size=10)
  return w, b, images, labels


def _apply(v, x):
  w, b = v
  return x.reshape(x.shape[0], -1) @ w + b[None]


def _np_predict(w, b, x):
  x = np.asarray(x, np.float64)
  return np.argmax(x.reshape(len(x), -1) @ w + b, -1)


def _models(w, b):
  v = (jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
  return {"bound": evaluate.BoundModel(_apply, v), "closure": functools.partial(_apply, v)}


@pytest.mark.parametrize("kind", ["bound", "closure"])
def test_clean_accuracy_matches_numpy_with_padding(problem, kind):
  w, b, images, labels = problem
  ref = np.mean(_np_predict(w, b, images / 255.0) == labels)
  # 10 images in batches of 4: the last batch is padded; the accuracy must not see the padding.
  got = evaluate.clean_accuracy(_models(w, b)[kind], images, labels, batch_size=4, progress=False)
  assert got == pytest.approx(ref, abs=1e-12)
  got_f = evaluate.clean_accuracy(_models(w, b)[kind], images.astype(np.float32) / 255, labels,
                                  batch_size=4, progress=False)
  assert got_f == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("compile_once", [False, True])
def test_contrast_corruption_accuracy_matches_numpy(problem, compile_once):
  """Contrast is deterministic: (x - per-image channel mean) * c + mean, clipped (make_cifar_c)."""
  w, b, images, labels = problem
  model = _models(w, b)["bound"]
  got = evaluate.corruption_accuracy(model, images, labels, names=["contrast"],
                                     severities=[1, 5], batch_size=4, progress=False,
                                     compile_once=compile_once)
  x = images / 255.0
  m = x.mean(axis=(1, 2), keepdims=True)
  for sev, c in ((1, 0.75), (5, 0.15)):
    xc = np.clip((x - m) * c + m, 0, 1)
    ref = np.mean(_np_predict(w, b, xc) == labels)
    assert got["contrast"][str(sev)] == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur"])
def test_severities_compiled_together_equal_one_compilation_per_severity(problem, name):
  """corruption_accuracy compiles all severities of a corruption into one function; its images
  and accuracies are bit for bit those of the former path, one static-severity jit per
  severity with key fold_in(fold_in(fold_in(eval_key, corruption index), severity), batch)."""
  import jax

  from drojax import corruptions

  w, b, images, labels = problem
  model = _models(w, b)["bound"]
  sevs = (1, 3, 5)
  got = evaluate.corruption_accuracy(model, images, labels, names=[name], severities=sevs,
                                     batch_size=4, progress=False)
  k_name = jax.random.fold_in(evaluate.eval_key(), corruptions.NAMES.index(name))
  ones = {sev: jax.jit(functools.partial(corruptions.corrupt, name=name, severity=sev))
          for sev in sevs}  # one compilation each, shared by both checks
  for sev, one in ones.items():
    correct = 0
    for batch, start in enumerate(range(0, len(images), 4)):
      rows = images[start:start + 4].astype(np.float32) / 255
      x = np.concatenate([rows, np.repeat(rows[-1:], 4 - len(rows), 0)])  # padded, as evaluated
      xc = one(jax.random.fold_in(jax.random.fold_in(k_name, sev), batch), jnp.asarray(x))
      pred = np.argmax(np.asarray(_apply(model.variables, xc)), -1)[: len(images) - start]
      correct += int(np.sum(pred == labels[start:start + 4]))
    assert got[name][str(sev)] == correct / len(images), sev
  # The corrupted images themselves, not only the accuracies.
  keys = tuple(jax.random.key(s) for s in sevs)
  x = jnp.asarray(images[:4].astype(np.float32) / 255)
  together = evaluate.corruption._jit_corrupt_severities(name, sevs, "standard")(keys, x)
  for key, sev, xc in zip(keys, sevs, together):
    np.testing.assert_array_equal(xc, ones[sev](key, x))


def test_generated_corruptions_are_reproducible(problem):
  w, b, images, labels = problem
  model = _models(w, b)["bound"]
  kw = dict(names=["gaussian_noise"], severities=[5], batch_size=4, progress=False)
  a = evaluate.corruption_accuracy(model, images, labels, **kw)
  c = evaluate.corruption_accuracy(model, images, labels, **kw)
  assert a == c
  # ...and the fixed key really drives the noise: evaluating with the explicit key agrees.
  d = evaluate.corruption_accuracy(model, images, labels, key=evaluate.eval_key(), **kw)
  assert a == d


def test_published_loader_accuracy(problem):
  w, b, images, labels = problem
  calls = []

  def loader(name, sev):
    calls.append((name, sev))
    return np.clip(images.astype(np.int64) + 40 * sev, 0, 255).astype(np.uint8), labels

  got = evaluate.published_corruption_accuracy(_models(w, b)["bound"], loader, names=["fog"],
                                               severities=[1, 3], batch_size=4, progress=False)
  assert calls == [("fog", 1), ("fog", 3)]
  for sev in (1, 3):
    x = np.clip(images.astype(np.int64) + 40 * sev, 0, 255) / 255.0
    assert got["fog"][str(sev)] == pytest.approx(np.mean(_np_predict(w, b, x) == labels))


def test_summarize_corruptions_against_manual_means():
  from drojax.corruptions import STANDARD_NAMES, EXTRA_NAMES

  rng = np.random.default_rng(1)
  acc = {n: {str(s): float(rng.uniform()) for s in range(1, 6)}
         for n in STANDARD_NAMES + EXTRA_NAMES}
  s = evaluate.summarize_corruptions(acc)
  std = np.array([[acc[n][str(k)] for k in range(1, 6)] for n in STANDARD_NAMES])
  ext = np.array([[acc[n][str(k)] for k in range(1, 6)] for n in EXTRA_NAMES])
  assert s["mean_corruption_accuracy"] == pytest.approx(std.mean())
  assert s["extra_corruption_accuracy"] == pytest.approx(ext.mean())
  for k in range(1, 6):
    assert s["per_severity_mean"][str(k)] == pytest.approx(std[:, k - 1].mean())
    assert s["extra_per_severity_mean"][str(k)] == pytest.approx(ext[:, k - 1].mean())
  assert s["complete"]
  del acc["fog"]["3"]
  assert not evaluate.summarize_corruptions(acc)["complete"]


def test_adversarial_accuracy_matches_closed_form_for_binary_linear_model():
  """For logits (0, w.x + b) the worst L-inf perturbation is -eps * y_sign * sign(w): an example
  is robust iff its margin exceeds eps * ||w||_1 (no clipping: pixels stay inside (0, 1))."""
  rng = np.random.default_rng(2)
  n, d = 40, 4 * 4 * 3
  w = rng.normal(size=d)
  bias = 0.0
  x = rng.uniform(0.3, 0.7, size=(n, 4, 4, 3))
  score = x.reshape(n, -1) @ w + bias
  labels = (score > 0).astype(np.int64)
  labels[:4] = 1 - labels[:4]  # a few clean mistakes: never robust
  wj = jnp.asarray(w, jnp.float32)
  f = lambda z: jnp.stack([jnp.zeros(z.shape[0]), z.reshape(z.shape[0], -1) @ wj], -1)
  eps = [0.0, 0.005, 0.01, 0.02]
  got = evaluate.adversarial_accuracy(f, x.astype(np.float32), labels, eps=eps, num_steps=20,
                                      batch_size=16, progress=False)
  margin = np.where(labels == 1, score, -score)
  l1 = np.abs(w).sum()
  for e in eps:
    ref = np.mean(margin > e * l1)
    assert got[evaluate.eps_key(e)] == pytest.approx(ref, abs=1.01 / n), e


def test_adversarial_bound_and_closure_agree(problem):
  w, b, images, labels = problem
  m = _models(w, b)
  kw = dict(eps=[4 / 255], num_steps=3, batch_size=4, progress=False)
  assert (evaluate.adversarial_accuracy(m["bound"], images, labels, **kw)
          == evaluate.adversarial_accuracy(m["closure"], images, labels, **kw))


def _np_group_reference(pred, y, g, train_g):
  ids = np.unique(g)
  acc = {int(i): np.mean(pred[g == i] == y[g == i]) for i in ids}
  wts = np.array([np.sum(train_g == i) for i in ids], float)
  wts /= wts.sum()
  return acc, min(acc.values()), float(np.dot(wts, [acc[int(i)] for i in ids]))


def test_group_accuracy_matches_numpy():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, 200)
  place = rng.integers(0, 2, 200)
  g = 2 * y + place
  pred = np.where(rng.uniform(size=200) < 0.2 + 0.2 * g, 1 - y, y)
  train_g = rng.choice(4, size=1000, p=[0.7, 0.05, 0.05, 0.2])
  acc, worst, avg = _np_group_reference(pred, y, g, train_g)
  got = evaluate.group_accuracy(pred, y, g, train_groups=train_g)
  assert {int(k): v for k, v in got["per_group"].items()} == pytest.approx(acc)
  assert got["worst_group"] == pytest.approx(worst)
  assert got["average"] == pytest.approx(avg)
  assert got["weights_from"] == "train"
  plain = evaluate.group_accuracy(pred, y, g)
  assert plain["average"] == pytest.approx(np.mean(pred == y))


def test_evaluate_schema_and_groups(problem):
  w, b, images, labels = problem
  groups = np.arange(10) % 2
  config = evaluate.EvalConfig(corruption_names=["contrast", "saturate"], severities=[2],
                               eps=[0.0, 2 / 255], num_steps=2, batch_size=4)
  res = evaluate.evaluate(_models(w, b)["bound"], images, labels, config=config, groups=groups,
                          progress=False)
  clean = np.mean(_np_predict(w, b, images / 255.0) == labels)
  assert res["clean_accuracy"] == pytest.approx(clean)
  assert set(res["corruption_accuracy"]) == {"contrast", "saturate"}
  assert res["mean_corruption_accuracy"] == res["corruption_accuracy"]["contrast"]["2"]
  assert res["extra_corruption_accuracy"] == res["corruption_accuracy"]["saturate"]["2"]
  assert res["adversarial_accuracy"]["0"] == pytest.approx(clean)
  assert res["corruption_source"] == "generated:standard"
  assert set(res["group_accuracy"]["per_group"]) == {"0", "1"}
  correct = _np_predict(w, b, images / 255.0) == labels
  per_group = [np.mean(correct[groups == g]) for g in (0, 1)]
  assert res["worst_group_accuracy"] == pytest.approx(min(per_group))
  assert res["average_group_accuracy"] == pytest.approx(np.mean(per_group))  # equal group sizes


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(names=["fogg"]), ValueError, "fogg"),
    (dict(severities=[0]), ValueError, "severities"),
    (dict(table="nope"), ValueError, "table"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_bad_corruption_args(problem, kwargs, err, match):
  w, b, images, labels = problem
  with pytest.raises(err, match=match):
    evaluate.corruption_accuracy(_models(w, b)["bound"], images, labels, progress=False, **kwargs)


def test_bad_arrays(problem):
  w, b, images, labels = problem
  m = _models(w, b)["bound"]
  with pytest.raises(ValueError, match="labels"):
    evaluate.clean_accuracy(m, images, labels[:3], progress=False)
  with pytest.raises(TypeError, match="labels"):
    evaluate.clean_accuracy(m, images, labels.astype(float), progress=False)
  with pytest.raises(TypeError, match="dtype"):
    evaluate.clean_accuracy(m, images.astype(np.int32), labels, progress=False)
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    evaluate.clean_accuracy(m, images[0], labels, progress=False)
  with pytest.raises(ValueError, match="eps"):
    evaluate.adversarial_accuracy(m, images, labels, eps=[-1.0], progress=False)
  with pytest.raises(ValueError, match="published_loader"):
    evaluate.evaluate(m, images, labels, config=evaluate.EvalConfig(corruptions="published"),
                      progress=False)
  with pytest.raises(ValueError, match="groups"):
    evaluate.group_accuracy(np.zeros(3), np.zeros(3), np.zeros(2, int))


@pytest.mark.parametrize("kwargs,match", [
    (dict(attack="fgsm"), "EvalConfig.attack must be one of"),
    (dict(corruptions="refined"), "EvalConfig.corruptions must be one of"),
    (dict(corruptions=None, frost_dir="/tmp"), "frost_dir applies to generated"),
])
def test_bad_eval_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    evaluate.EvalConfig(**kwargs)


def test_evaluate_refuses_the_old_keywords_naming_the_config_field(problem):
  w, b, images, labels = problem
  with pytest.raises(TypeError, match=r"'adv_steps'; it is now EvalConfig\(num_steps=...\)"):
    evaluate.evaluate(_models(w, b)["bound"], images, labels, adv_steps=2, progress=False)
  with pytest.raises(TypeError, match="must be an EvalConfig"):
    evaluate.evaluate(_models(w, b)["bound"], images, labels, config={"eps": ()}, progress=False)


def test_bind_equals_the_model_in_eval_mode_and_local_copy_keeps_values():
  import jax

  from drojax import distributed, models

  net = models.get_model("small_cnn", num_classes=3, width=2)
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  variables = net.init(jax.random.key(0), x, train=False)
  expected = net.apply(variables, x, train=False)  # flax's own convolutions
  np.testing.assert_allclose(evaluate.bind(net, variables)(x), expected, rtol=1e-5, atol=1e-6)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.device_put(variables, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  local = distributed.local_copy(replicated)
  for a, b in zip(jax.tree.leaves(local), jax.tree.leaves(variables)):
    assert a.devices() == {jax.devices()[0]}
    np.testing.assert_array_equal(a, b)


def test_methods_name_what_they_need():
  from drojax import methods

  assert [methods.needs(m) for m in ("erm", "group_dro", "irm", "var_dro_vrex")] == [
      None, "group", "environment", "environment"]
  assert [methods.two_stage(m) for m in ("jtt", "erm")] == [True, False]
  with pytest.raises(ValueError, match="unknown method"):
    methods.needs("nope")
