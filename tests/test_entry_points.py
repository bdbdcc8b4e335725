"""Every public entry point refuses a bad value of each kind of argument (issue 25).

A row is ``(function, valid keyword arguments, argument, bad value, exception, phrase)``. The
test calls the function once with the valid arguments (the control: it must not raise, so a
renamed argument or a wrong base call cannot pass as a refusal) and once with the one argument
replaced by the bad value, which must raise ``exception`` with ``phrase`` in a one-line message.
Controls are shared by every row of a function (one compile each, tiny shapes); most refusals
happen before any compute.
"""

import functools
import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import (attacks, augment, corruptions, evaluate, groups, losses, objectives, wdro,
                    weighting)

NAN, INF = float("nan"), float("inf")
_KEY = jax.random.key(0)
_B, _K = 2, 4
_X = jnp.full((_B, 4, 4, 3), 0.5).at[0, 0, 0, 0].set(0.2)
_X255 = _X * 255
_XNAN = _X.at[1, 3, 3, 2].set(NAN)
_W = jnp.asarray(np.random.default_rng(0).normal(size=(48, _K)), jnp.float32)
_F = lambda z: z.reshape(z.shape[0], -1) @ _W  # noqa: E731  tiny linear model, K = 4
_Y = jnp.array([0, 3])
_YOUT = jnp.array([0, 4])
_YNEG = jnp.array([-1, 0])
_L = jnp.array([[1.0, 0.0, 0.5, 0.2], [0.1, 0.3, 0.0, 1.0]])
_P = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
_PBAD = jnp.array([[1.5, -0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
_PSUM = jnp.array([[0.5, 0.4, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
_LOSSES = jnp.array([0.5, 2.0, 1.0])
_C = jnp.full((1, 32, 32, 3), 0.5)
_XU8 = np.full((_B, 4, 4, 3), 128, np.uint8)
_A = dict(key=_KEY, logits_fn=_F, x=_X, y=_Y)  # the attacks' common arguments
_V = lambda **kw: (jnp.stack([_L, _L[::-1]]),)  # noqa: E731


def _small_cnn():
  from drojax import models

  return models.get_model("small_cnn", num_classes=_K, width=2)


def _tracker():
  return weighting.init_tracker(4)


_TOY = types.SimpleNamespace(groups=np.array([0, 1, 1]), environments=None, name="toy")
_TRACKED = dict(tracker=_tracker(), ids=jnp.array([0, 3]), losses=_LOSSES[:2], step=5,
                eps_min=0.0, eps_max=1.0, warmup_steps=0, ramp_steps=0)
_ANNEAL = dict(risk=jnp.float32(1.0), penalty=jnp.float32(0.5), step=3, weight=4.0,
               anneal_steps=2)
_RUNS = [{"accuracy": 0.9, "group_accuracy": {"worst_group": 0.2}}]
_SUMMARY = dict(var=np.array([1.0, 3.0, 2.0]), weight=np.array([1.0, 1.0, np.nan]),
                groups=np.array([0, 1, 1]))


ROWS = [
    # --- losses
    (losses.cross_entropy, dict(logits=_L, labels=_Y), "labels", _YOUT, ValueError,
     "labels (class ids for 4 classes) must lie in [0, 4)"),
    (losses.cross_entropy, dict(logits=_L, labels=_Y), "labels", _YNEG, ValueError, "e.g. -1"),
    (losses.cross_entropy, dict(logits=_L, labels=_P), "labels", _PBAD, ValueError,
     "labels must hold probability rows"),
    (losses.cross_entropy, dict(logits=_L, labels=_P), "labels", _PSUM, ValueError, "(sum 0.9)"),
    (losses.cross_entropy, dict(logits=_L, labels=_Y), "label_smoothing", NAN, ValueError,
     "label_smoothing"),
    (losses.jsd_consistency, dict(logits_views=[_L, _L]), "logits_views", [_L], ValueError,
     "V >= 2"),
    (losses.trades_kl, dict(logits_clean=_L, logits_adv=_L), "logits_adv", _L[:, :3],
     ValueError, "same [B, K] shape"),
    (losses.mart_loss, dict(logits_clean=_L, logits_adv=_L, labels=_Y, beta=6.0), "labels", _YOUT,
     ValueError, "class ids for 4 classes"),
    (losses.mart_loss, dict(logits_clean=_L, logits_adv=_L, labels=_Y, beta=6.0), "beta", NAN,
     ValueError, "beta must be >= 0 and finite"),
    (losses.group_losses, dict(per_example=_LOSSES, groups=jnp.array([0, 1, 1]), num_groups=2),
     "groups", jnp.array([0, 1, 5]), ValueError, "groups must lie in [0, 2)"),
    (losses.irm_penalty, dict(logits=_L, labels=_Y), "labels", _YOUT, ValueError,
     "class ids for 4 classes"),
    (losses.vrex_penalty, dict(risks=_LOSSES), "risks", jnp.ones(3, jnp.int32), TypeError,
     "risks must be a floating-point array"),
    # --- weighting
    (weighting.water_filling, dict(losses=_LOSSES, eps=0.5), "losses",
     _LOSSES.at[1].set(NAN), ValueError, "losses must be finite"),
    (weighting.water_filling, dict(losses=_LOSSES, eps=0.5), "eps", -0.5, ValueError,
     "eps must be >= 0"),
    (weighting.radii, dict(variances=_LOSSES, eps_min=0.0, eps_max=1.0), "variances",
     _LOSSES.at[0].set(-1.0), ValueError, "variances must be >= 0"),
    (weighting.radii, dict(variances=_LOSSES, eps_min=0.0, eps_max=1.0), "variances",
     _LOSSES.at[0].set(NAN), ValueError, "variances must be >= 0 (and not NaN)"),
    (weighting.radii, dict(variances=_LOSSES, eps_min=0.0, eps_max=1.0), "eps_min", NAN,
     ValueError, "eps_min must be >= 0"),
    (weighting.var_dro_weights, dict(losses=_LOSSES, variances=_LOSSES, step=5, eps_min=0.0,
                                     eps_max=1.0, warmup_steps=0, ramp_steps=0), "variances",
     _LOSSES.at[2].set(-0.1), ValueError, "variances must be >= 0"),
    (weighting.var_dro_weights, dict(losses=_LOSSES, variances=_LOSSES, step=5, eps_min=0.0,
                                     eps_max=1.0, warmup_steps=0, ramp_steps=0), "losses",
     _LOSSES.at[2].set(INF), ValueError, "losses must be finite"),
    (weighting.eps_max_schedule, dict(step=3, warmup_steps=1, ramp_steps=2, eps_max=1.0),
     "warmup_steps", -1, ValueError, "warmup_steps must be >= 0"),
    (weighting.eps_max_schedule, dict(step=3, warmup_steps=1, ramp_steps=2, eps_max=1.0),
     "eps_max", NAN, ValueError, "eps_max must be >= 0"),
    (weighting.loss_scaled_eps_max, dict(tracked_losses=_LOSSES, eps_max=1.0, num_classes=4),
     "num_classes", 1, ValueError, "num_classes must be an int >= 2"),
    (weighting.loss_scaled_eps_max, dict(tracked_losses=_LOSSES, eps_max=1.0, num_classes=4),
     "eps_max", INF, ValueError, "eps_max"),
    (weighting.init_tracker, dict(num_examples=4), "num_examples", 0, ValueError,
     "num_examples must be an int >= 1"),
    (weighting.update_tracker, dict(state=_tracker(), ids=jnp.array([0, 3]), losses=_LOSSES[:2]),
     "ids", jnp.array([0, 4]), ValueError, "ids must lie in [0, 4)"),
    (weighting.update_tracker, dict(state=_tracker(), ids=jnp.array([0, 3]), losses=_LOSSES[:2]),
     "ema", 0.0, ValueError, "ema must be in (0, 1]"),
    (weighting.update_tracker, dict(state=_tracker(), ids=jnp.array([0, 3]), losses=_LOSSES[:2]),
     "losses", jnp.array([1.0, NAN]), ValueError, "losses must be finite"),
    (weighting.tracked_rows, dict(tracker=_tracker(), ids=jnp.array([0, 3])), "ids",
     jnp.array([-1, 3]), ValueError, "ids must lie in [0, 4)"),
    (weighting.tracked_rows, dict(tracker=_tracker(), ids=jnp.array([0, 3])), "tracker",
     (jnp.zeros(4),) * 3, TypeError, "tracker must be a TrackerState"),
    (weighting.group_adjustments, dict(train_counts=np.array([3, 4]), adjustment=1.0),
     "adjustment", NAN, ValueError, "adjustment must be >= 0"),
    (weighting.group_dro_update, dict(q=jnp.array([0.5, 0.5]), group_losses=jnp.array([1.0, 2.0]),
                                      step_size=0.1), "step_size", NAN, ValueError,
     "step_size must be > 0"),
    # --- groups (the rest are re-exported by losses and weighting, above)
    (groups.annealed_penalty, _ANNEAL, "weight", NAN, ValueError, "weight must be >= 0 and finite"),
    (groups.annealed_penalty, _ANNEAL, "anneal_steps", -1, ValueError,
     "anneal_steps must be an int >= 0"),
    (groups.group_counts, dict(groups=jnp.array([0, 1, 1]), num_groups=2), "groups",
     jnp.array([0, 1, 5]), ValueError, "groups must lie in [0, 2)"),
    (groups.irm_gradients, dict(logits=_L, labels=_Y), "labels", _YOUT, ValueError,
     "class ids for 4 classes"),
    (groups.training_ids, dict(dataset=_TOY, need="group"), "need", "grop", ValueError,
     "need must be one of"),
    (groups.check_training_data, dict(dataset=_TOY, need="group", count=2), "count", 1,
     ValueError, "num_groups=1, but the training data has groups ids up to 1"),
    (groups.check_training_data, dict(dataset=_TOY, need="group", count=2), "group_counts",
     (2, 1), ValueError, "group_counts=(2, 1), but the training data has (1, 2)"),
    (groups.jtt_weights, dict(ids=np.array([2, 0]), errors=np.array([True, False]),
                              num_examples=3, lambda_up=6.0), "ids", np.array([3, 0]),
     ValueError, "ids must lie in [0, 3)"),
    (groups.jtt_weights, dict(ids=np.array([2, 0]), errors=np.array([True, False]),
                              num_examples=3, lambda_up=6.0), "lambda_up", NAN, ValueError,
     "lambda_up must be > 0"),
    (groups.select, dict(validation=_RUNS, by="average"), "validation", [], ValueError,
     "validation is empty"),
    (groups.selection_score, dict(validation=_RUNS[0], by="average"), "by", "worst",
     ValueError, "by must be one of"),
    (groups.summarize_by_group, _SUMMARY, "var", np.array([1.0, NAN, 2.0]), ValueError,
     "var must not hold NaN"),
    (groups.summarize_by_group, _SUMMARY, "groups", np.array([0, 1]), ValueError,
     "groups must be [N]=(3,)"),
    (groups.summarize_by_group, _SUMMARY, "groups", np.array([0, -1, 1]), ValueError,
     "groups must be integer ids >= 0"),
    # --- wdro
    (wdro.variation_penalty, dict(grads=_L), "q", 0.5, ValueError, "q must be in [1, inf]"),
    (wdro.variation_penalty, dict(grads=_L), "grads", jnp.ones((2, 4), jnp.int32), TypeError,
     "grads must be a floating-point array"),
    (wdro.wdro_total, dict(key=None, loss_fn=lambda z: jnp.sum(z ** 2, 1), x=_L, rho=0.1), "rho",
     NAN, ValueError, "rho must be >= 0 and finite"),
    (wdro.wdro_total, dict(key=None, loss_fn=lambda z: jnp.sum(z ** 2, 1), x=_L, rho=0.1), "rho",
     INF, ValueError, "got inf"),
    (wdro.wdro_total, dict(key=None, loss_fn=lambda z: jnp.sum(z ** 2, 1), x=_L, rho=0.1,
                           penalty_mode="finite_difference"), "fd_step", INF, ValueError,
     "fd_step must be a positive Python float"),
    (wdro.input_gradients, dict(loss_fn=lambda z: jnp.sum(z ** 2, 1), x=_L), "x",
     jnp.ones((2, 4), jnp.int32), TypeError, "floating"),
    (wdro.norm_exponent, dict(norm="l2"), "norm", "l0.5", ValueError, "p >= 1"),
    (wdro.norm_exponent, dict(norm="l2"), "norm", 2.0, TypeError, "write norm='l2'"),
    # --- objectives: factories refuse at construction, risks and the ascent at the call
    (objectives.wdro, dict(rho=0.1), "rho", NAN, ValueError, "rho must be >= 0 and finite"),
    (objectives.wdro, dict(rho=0.1), "q", 0.5, ValueError, "q must be in [1, inf]"),
    (objectives.wdro, dict(rho=0.1), "penalty_subsample", 0.0, ValueError,
     "penalty_subsample must be a number in (0, 1]"),
    (objectives.var_dro, dict(), "eps_min", NAN, ValueError, "eps_min must be >= 0 and finite"),
    (objectives.var_dro, dict(), "ema", 0.0, ValueError, "ema must be"),
    (objectives.var_dro, dict(), "warmup_steps", -1, ValueError, "warmup_steps must be an int >= 0"),
    (objectives.kl_dro, dict(temperature=1.0), "temperature", NAN, ValueError,
     "temperature must be > 0 and finite"),
    (objectives.cvar, dict(alpha=0.5), "alpha", NAN, ValueError, "alpha must be a number in (0, 1]"),
    (objectives.pgd_at, dict(), "eps", NAN, ValueError, "eps must be >= 0 and finite"),
    (objectives.pgd_at, dict(), "num_steps", 0, ValueError, "num_steps must be an int >= 1"),
    (objectives.trades, dict(), "beta", INF, ValueError, "beta must be >= 0 and finite"),
    (objectives.mart, dict(), "step_size", -1.0, ValueError, "step_size must be >= 0 and finite"),
    (objectives.group_dro, dict(num_groups=2, step_size=0.1), "step_size", NAN, ValueError,
     "step_size must be > 0"),
    (objectives.irm, dict(num_environments=2, penalty_weight=1.0), "penalty_weight", NAN,
     ValueError, "penalty_weight must be >= 0 and finite"),
    (objectives.vrex, dict(num_environments=2, penalty_weight=1.0), "penalty_weight", INF,
     ValueError, "penalty_weight must be >= 0 and finite"),
    (objectives.var_dro_vrex, dict(num_environments=2, penalty_weight=1.0), "penalty_weight", NAN,
     ValueError, "penalty_weight must be >= 0 and finite"),
    (objectives.weighted_erm, dict(weights_by_id=np.array([1.0, 2.0])), "weights_by_id",
     np.array([1.0, NAN]), ValueError, "positive finite weights"),
    (objectives.tracked_weights, _TRACKED, "ids", jnp.array([0, 4]), ValueError,
     "ids must lie in [0, 4)"),
    (objectives.tracked_weights, _TRACKED, "schedule", "los", ValueError,
     "schedule must be one of"),
    (objectives.kl_dro_risk, dict(losses=_LOSSES, temperature=1.0), "losses",
     _LOSSES.at[0].set(NAN), ValueError, "losses must be finite"),
    (objectives.cvar_risk, dict(losses=_LOSSES, alpha=0.5), "losses", _LOSSES.at[0].set(NAN),
     ValueError, "losses must be finite"),
    (objectives.linf_pgd_ascent, dict(key=None, loss_fn=lambda z: jnp.sum(z, (1, 2, 3)), x=_X,
                                      eps=0.1, step_size=0.05, num_steps=1, start="none"),
     "eps", -0.1, ValueError, "eps must be >= 0 and finite"),
    (objectives.linf_pgd_ascent, dict(key=None, loss_fn=lambda z: jnp.sum(z, (1, 2, 3)), x=_X,
                                      eps=0.1, step_size=0.05, num_steps=1, start="none"),
     "x", _X255, ValueError, "x must lie in [0, 1]"),
    # --- attacks: labels against the model's K, images, budgets, options
    (attacks.fgsm, dict(logits_fn=_F, x=_X, y=_Y, eps=0.1), "y", _YOUT, ValueError,
     "fgsm: y (class ids for 4 classes) must lie in [0, 4)"),
    (attacks.fgsm, dict(logits_fn=_F, x=_X, y=_Y, eps=0.1), "x", _XNAN, ValueError,
     "contains 1 NaN"),
    (attacks.pgd, dict(_A, eps=0.1, step_size=0.1, num_steps=1), "y", _YNEG, ValueError,
     "pgd: y (class ids"),
    (attacks.pgd, dict(_A, eps=0.1, step_size=0.1, num_steps=1), "eps", NAN, ValueError,
     "eps must be >= 0"),
    (attacks.pgd_robust, dict(_A, eps=0.1, step_size=0.1, num_steps=1), "y", _YOUT, ValueError,
     "must lie in [0, 4)"),
    (attacks.robust_accuracy, dict(_A, eps=0.1, step_size=0.1, num_steps=1), "y", _YOUT,
     ValueError, "must lie in [0, 4)"),
    (attacks.robust_accuracy, dict(_A, eps=0.1, step_size=0.1, num_steps=1), "x", _X255,
     ValueError, "by 255"),
    (attacks.apgd, dict(_A, eps=0.1, num_steps=1), "y", _YOUT, ValueError,
     "apgd: y (class ids for 4 classes)"),
    (attacks.apgd, dict(_A, eps=0.1, num_steps=1), "norm", "l3", ValueError, "norm must be one"),
    (attacks.apgd_robust, dict(_A, eps=0.1, num_steps=1), "y", _YOUT, ValueError, "[0, 4)"),
    (attacks.apgd_targeted, dict(_A, eps=0.1, num_steps=1, num_targets=1), "y", _YOUT,
     ValueError, "apgd_targeted: y"),
    (attacks.apgd_targeted_robust, dict(_A, eps=0.1, num_steps=1, num_targets=1), "num_targets",
     4, ValueError, "num_targets must be <= K - 1 = 3"),
    (attacks.apgd_trace, dict(_A, eps=0.1, num_steps=1), "y", _YOUT, ValueError,
     "apgd_trace: y"),
    (attacks.square, dict(_A, eps=0.1, num_queries=1), "y", _YOUT, ValueError, "square: y"),
    (attacks.square_robust, dict(_A, eps=0.1, num_queries=1), "p_init", 1.5, ValueError,
     "p_init must be in (0, 1]"),
    (attacks.robust_suite, dict(_A, eps=0.1, num_steps=1, num_targets=1, num_queries=1,
                                attacks=("apgd_ce",)), "y", _YOUT, ValueError,
     "robust_accuracy_suite: y"),
    (attacks.robust_accuracy_suite, dict(_A, eps=0.1, num_steps=1, num_targets=1, num_queries=1,
                                         attacks=("apgd_ce",)), "y", _YNEG, ValueError,
     "robust_accuracy_suite: y"),
    (attacks.robust_accuracy_suite, dict(_A, eps=0.1, num_steps=1, num_targets=1, num_queries=1,
                                         attacks=("apgd_ce",)), "x", _X255, ValueError, "by 255"),
    (attacks.fab, dict(_A, eps=0.1, num_steps=1), "y", _YOUT, ValueError, "fab: y"),
    (attacks.fab_robust, dict(_A, eps=0.1, num_steps=1), "x", _X255, ValueError, "by 255"),
    (attacks.check_fab_options, dict(eps=0.1, norm="linf", num_steps=1, targeted=True,
                                     num_targets=1, restarts=1, alpha_max=0.1, eta=1.05,
                                     beta=0.9), "beta", NAN, ValueError, "beta must be in (0, 1)"),
    (attacks.per_example_loss, dict(logits_fn=_F, x=_X, y=_Y), "y", _YOUT, ValueError,
     "y (class ids for 4 classes)"),
    (attacks.dlr_loss, dict(logits=_L, y=_Y), "y", _YOUT, ValueError, "y (class ids"),
    (attacks.dlr_targeted_loss, dict(logits=_L, y=_Y, target=jnp.array([1, 2])), "target",
     jnp.array([1, 9]), ValueError, "target (class ids"),
    (attacks.margin, dict(logits=_L, y=_Y), "y", _YOUT, ValueError, "y (class ids"),
    (attacks.check_suite_options, dict(eps=0.1, norm="linf", num_steps=1, num_targets=1,
                                       num_queries=1, p_init=0.8, num_classes=4),
     "num_classes", 3, ValueError, "APGD-T needs at least 4 classes"),
    (attacks.check_pgd_options, dict(norm="linf", num_steps=1, restarts=1), "restarts", 0,
     ValueError, "restarts must be an int >= 1"),
    # --- augment
    (augment.mixup, dict(key=_KEY, x=_X, y=_P), "y", _PBAD, ValueError,
     "y must hold probability rows"),
    (augment.mixup, dict(key=_KEY, x=_X, y=_P), "alpha", NAN, ValueError, "alpha must be > 0"),
    (augment.mixup_with_lambda, dict(x=_X, y=_P, lam=jnp.float32(0.3), partner=jnp.array([1, 0])),
     "lam", jnp.float32(1.5), ValueError, "lam must lie in [0, 1]"),
    (augment.mixup_with_lambda, dict(x=_X, y=_P, lam=jnp.float32(0.3), partner=jnp.array([1, 0])),
     "partner", jnp.array([1, 2]), ValueError, "partner must lie in [0, 2)"),
    (augment.sample_mixup_params, dict(key=_KEY, batch_size=2, alpha=1.0), "alpha", INF,
     ValueError, "alpha must be > 0 and finite"),
    (augment.augmix, dict(key=_KEY, images=_X, width=1, depth=1), "images", _XNAN, ValueError,
     "contains 1 NaN"),
    (augment.augmix, dict(key=_KEY, images=_X, width=1, depth=1), "severity", NAN, ValueError,
     "severity must be in (0, 10]"),
    (augment.augmix_views, dict(key=_KEY, images=_X, width=1, depth=1), "images", _X255,
     ValueError, "by 255"),
    (augment.sample_augmix_params, dict(key=_KEY, batch_size=2), "alpha", NAN, ValueError,
     "alpha must be > 0"),
    (augment.crop_flip, dict(images=_X, offsets=jnp.array([[0, 8], [4, 4]]),
                             flips=jnp.array([True, False])), "offsets",
     jnp.array([[0, 9], [4, 4]]), ValueError, "offsets must lie in [0, 9)"),
    (augment.random_crop_flip, dict(key=_KEY, images=_X), "images", _XNAN, ValueError, "NaN"),
    (augment.sample_noisymix_plan, dict(key=_KEY, targets=_P), "targets", _PSUM, ValueError,
     "targets must hold probability rows"),
    (augment.sample_noisymix_plan, dict(key=_KEY, targets=_P), "add_level", NAN, ValueError,
     "add_level must be >= 0 and finite"),
    # --- corruptions
    (corruptions.corrupt, dict(key=_KEY, images=_C, name="contrast", severity=1), "images",
     _C.at[0, 1, 2, 0].set(NAN), ValueError, "contains 1 NaN"),
    (corruptions.corrupt, dict(key=_KEY, images=_C, name="contrast", severity=1), "severity",
     jnp.float32(7.0), ValueError, "severity must be a number in [0, 5]"),
    (corruptions.corrupt, dict(key=_KEY, images=_C, name="contrast", severity=1), "name", "fgo",
     ValueError, "fog"),
    (corruptions.corrupt, dict(key=_KEY, images=_C, name="frost", severity=1,
                               frost_textures=jnp.full((1, 40, 40, 3), 0.5)), "frost_textures",
     jnp.full((1, 40, 40, 3), 200.0), ValueError, "textures must lie in [0, 1]"),
    (corruptions.params_at, dict(name="fog", severity=1), "severity", 6, ValueError,
     "severity must be an int 1..5"),
    # --- evaluate
    (evaluate.bind, dict(model=_small_cnn(), variables=None), "model", _F, ValueError,
     "model must be a drojax.models module"),
    (evaluate.predict, dict(model=_F, images=_X, progress=False), "images", np.asarray(_X255),
     ValueError, "predict: images must lie in [0, 1]"),
    (evaluate.clean_accuracy, dict(model=_F, images=_XU8, labels=_Y, progress=False), "labels",
     np.array([0, 4]), ValueError, "clean_accuracy: labels (class ids for 4 classes)"),
    (evaluate.clean_accuracy, dict(model=_F, images=_XU8, labels=_Y, progress=False), "images",
     np.asarray(_X255), ValueError, "clean_accuracy: images must lie in [0, 1]"),
    (evaluate.corruption_accuracy, dict(model=_F, images=_XU8, labels=_Y, names=["contrast"],
                                        severities=[1], progress=False), "labels",
     np.array([-1, 0]), ValueError, "corruption_accuracy: labels"),
    (evaluate.corruption_accuracy, dict(model=_F, images=_XU8, labels=_Y, names=["contrast"],
                                        severities=[1], progress=False), "severities", [6],
     ValueError, "severities must be ints in 1..5"),
    (evaluate.published_corruption_accuracy,
     dict(model=_F, loader=lambda n, s: (_XU8, np.asarray(_Y)), names=["fog"], severities=[1],
          progress=False), "loader", lambda n, s: (_XU8, np.array([0, 7])), ValueError,
     "published fog severity 1: labels"),
    (evaluate.adversarial_accuracy, dict(model=_F, images=_XU8, labels=_Y, eps=[0.1],
                                         num_steps=1, progress=False), "labels",
     np.array([0, 4]), ValueError, "adversarial_accuracy: labels"),
    (evaluate.adversarial_accuracy, dict(model=_F, images=_XU8, labels=_Y, eps=[0.1],
                                         num_steps=1, progress=False), "eps", [-0.1], ValueError,
     "eps must be >= 0"),
    (evaluate.auto_attack_accuracy, dict(model=_F, images=_XU8, labels=_Y, eps=[0.1],
                                         attack="apgd", num_steps=1, progress=False), "labels",
     np.array([0, 4]), ValueError, "auto_attack_accuracy: labels"),
    (evaluate.evaluate, dict(model=_F, images=_XU8, labels=_Y, progress=False,
                             config=evaluate.EvalConfig(corruptions=None, eps=())), "labels",
     np.array([0, 4]), ValueError, "evaluate: labels"),
    (evaluate.group_accuracy, dict(predictions=np.array([0, 1]), labels=np.array([0, 1]),
                                   groups=np.array([0, 1])), "groups", np.array([0.0, 1.0]),
     TypeError, "groups must be integer ids"),
]


def _id(row):
  fn, _, arg, bad, *_ = row
  return f"{fn.__module__.split('.')[1]}.{fn.__name__}-{arg}-{str(bad)[:12]}"


# Controls only traced (jax.eval_shape: arguments and options accepted, no XLA compile) where
# compiling costs tens of seconds on CPU; their value checks are exercised by the bad rows.
_TRACE_ONLY = (augment.augmix, augment.augmix_views)


@functools.lru_cache(maxsize=None)
def _control(index):
  fn, base = ROWS[index][:2]
  if fn in _TRACE_ONLY:
    arrays = {k: v for k, v in base.items() if isinstance(v, jax.Array)}
    static = {k: v for k, v in base.items() if k not in arrays}
    return jax.eval_shape(lambda **a: fn(**a, **static), **arrays)
  return jax.block_until_ready(fn(**base))


def _first_row_with_base(index):
  fn, base = ROWS[index][:2]
  return next(i for i, r in enumerate(ROWS) if r[0] is fn and r[1] is base)


def test_every_public_function_has_a_row():
  covered = {r[0] for r in ROWS}
  # Helpers with no value to refuse (keys, names, state plumbing, a plan applied inside the
  # model); augmix_with_params takes sampled parameters (its images are checked as augmix's).
  skip = {"stateless_init", "all_gather", "weight_entropy", "mean", "eval_key", "eps_key",
          "summarize_corruptions", "default_unroll", "checkpoints", "p_schedule", "count_classes",
          "apply_mix_plan", "mix_and_perturb", "augmix_with_params",
          # Unchecked by design, called inside the caller's jit (documented): the suite's step,
          # FAB's projection and the PGD loop (pgd and linf_pgd_ascent check around it).
          "attack_stage", "project_hyperplane_box", "projected_ascent"}
  for module in (losses, weighting, groups, wdro, objectives, attacks, augment, corruptions,
                 evaluate):
    for name in module.__all__:
      obj = getattr(module, name)
      if callable(obj) and not isinstance(obj, type) and name not in skip:
        assert obj in covered, f"{module.__name__}.{name} has no row"


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[_id(r) for r in ROWS])
def test_bad_value_is_refused_and_control_passes(index):
  fn, base, arg, bad, exc, phrase = ROWS[index]
  params = inspect.signature(fn).parameters  # through a decorator (e.g. _checks.renamed)
  assert arg in base or arg in params, f"{fn.__name__} has no argument {arg}"
  _control(_first_row_with_base(index))
  with pytest.raises(exc) as info:
    fn(**{**base, arg: bad})
  message = str(info.value)
  assert phrase.lower() in message.lower(), message
  assert "\n" not in message, message
