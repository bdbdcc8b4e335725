r"""Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), MART (Wang et
al. 2020), as objectives without state.

Each generates L-inf adversarial examples from the training views inside ``apply`` with
:func:`linf_pgd_ascent` (the model enters through the :class:`~drojax.objectives.base.ModelFns`
closures, the random start through ``key``), holds them constant (``stop_gradient``: the
parameter gradient does not flow through the attack), and returns the paper's loss:

* ``pgd_at``: :math:`\frac1B \sum_i \ell_i(x^{adv}_i)`, the method's criterion (cross-entropy
  on the soft targets) on PGD examples that maximize it, from a uniform random start in the
  ball, ``steps`` steps of size ``step_size``.
* ``trades``: :math:`\frac1B \sum_i CE(z_i, t_i) + \beta\,\mathrm{KL}(p_i \| p^{adv}_i)`
  (:func:`drojax.losses.trades_kl`), :math:`x^{adv}` maximizing the KL from
  :math:`x + 0.001\,\mathcal N(0, I)`.
* ``mart``: :func:`drojax.losses.mart_loss` averaged, :math:`x^{adv}` maximizing the
  cross-entropy from :math:`x + 0.001\,\mathcal N(0, I)`.

BatchNorm during the inner maximization, as each paper's official code does: TRADES
(yaodongyu/TRADES, ``trades_loss``) and MART (YisenWang/MART, ``mart_loss``) call
``model.eval()`` to generate the example, so here it uses ``ModelFns.eval_logits`` (running
statistics); Madry-style PGD-AT code (e.g. locuslab/robust_overfitting) keeps the model in train
mode, so ``pgd_at`` attacks ``ModelFns.loss`` (batch statistics of the adversarial iterate;
the statistics of the attack's forward passes are discarded, where PyTorch would fold each into
its running averages). The outer loss runs in train mode. TRADES and MART run two train-mode
forward passes (clean, adversarial) with their own batch statistics, as their code; the running
statistics kept are those of the clean pass (PyTorch updates them with both, one EMA step
apart). PGD-AT keeps those of the adversarial pass, its only one.

Images are NHWC float32 in [0, 1] and stay there. Imports JAX only.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from drojax import attacks as _attacks
from drojax import losses as _losses
from drojax._checks import check_float, check_hyper, check_static_int, check_unit_range
from drojax.objectives.base import Objective, ObjectiveAux, stateless_init

__all__ = ["linf_pgd_ascent", "mart", "pgd_at", "trades", "START_MODES"]

START_MODES = _attacks.START_MODES


def linf_pgd_ascent(key: jax.Array | None, loss_fn: Callable[[jax.Array], jax.Array],
                    x: jax.Array, *, eps: float | jax.Array, step_size: float | jax.Array,
                    num_steps: int, start: str = "uniform", unroll: bool | None = None
                    ) -> jax.Array:
  r"""Projected sign-gradient ascent of :math:`\sum_i \ell_i(x')` over the L-inf ball: the
  checked, gradient-stopped form of :func:`drojax.attacks.projected_ascent` for training.

  .. math:: x^{t+1} = \mathrm{clip}_{[0,1]}\big(\Pi_{\|x' - x\|_\infty \le \epsilon}
            (x^t + \alpha\,\mathrm{sign}\,\nabla_{x^t} \textstyle\sum_i \ell_i(x^t))\big)

  Clipping to [0, 1] after the projection only moves a pixel towards ``x`` (in [0, 1]), so
  every iterate after a step is in the ball and in [0, 1].

  Args:
    key: PRNG key of the random start (unused, may be None, with ``start="none"``).
    loss_fn: ``x' [B, ...] -> [B]`` per-example losses to maximize (a closure over the model).
    x: ``[B, ...]`` float images in [0, 1] (checked when concrete).
    eps: radius ``>= 0`` in pixel units (e.g. 8/255); finite, checked when concrete; a traced
      negative or NaN radius (or step size) gives NaN images.
    step_size: ``alpha >= 0`` (e.g. 2/255).
    num_steps: ``>= 1`` (static).
    start: ``"uniform"`` (uniform in the ball, clipped to [0, 1]; Madry et al.), ``"normal"``
      (``x + 0.001 N(0, I)``, TRADES/MART, not projected until the first step) or ``"none"``
      (static).
    unroll: unroll the steps in Python (True) or run ``lax.fori_loop`` (False); None picks per
      backend with :func:`drojax.attacks.default_unroll` (unrolled on CPU, where the loop form
      measured 3.5-5.5x slower, ``docs/benchmarks.md``) (static).

  Returns:
    ``x_adv`` with the shape of ``x``, constant for differentiation (``stop_gradient``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.full((1, 3), 0.5)
    >>> adv = linf_pgd_ascent(None, lambda z: z.sum(1), x, eps=0.1, step_size=0.05,
    ...                       num_steps=3, start="none")
    >>> [round(float(v), 4) for v in adv[0]]
    [0.6, 0.6, 0.6]
  """
  if start not in START_MODES:
    raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
  check_static_int("num_steps", num_steps, minimum=1)
  check_hyper("eps", eps, low=0.0, expected=">= 0 and finite")
  check_hyper("step_size", step_size, low=0.0, expected=">= 0 and finite")
  x = check_float("x", x, min_rank=1)
  check_unit_range("x", x)
  x_adv = _attacks.projected_ascent(key, loss_fn, jax.lax.stop_gradient(x), eps=eps,
                                    step_size=step_size, num_steps=num_steps, norm="linf",
                                    start=start, unroll=unroll)
  # A traced negative or NaN radius cannot be refused: NaN, never a point outside the ball.
  ok = (jnp.asarray(eps, x.dtype) >= 0) & (jnp.asarray(step_size, x.dtype) >= 0)
  x_adv = jnp.where(ok, x_adv, jnp.nan)
  return jax.lax.stop_gradient(x_adv)


def _check_adv(eps, steps, step_size, beta=None):
  check_hyper("eps", eps, low=0.0, expected=">= 0 and finite")
  check_static_int("steps", steps, minimum=1)
  check_hyper("step_size", step_size, low=0.0, expected=">= 0 and finite")
  if beta is not None:
    check_hyper("beta", beta, low=0.0, expected=">= 0 and finite")


def _one_view(name, images):
  if images.shape[1] != 1:
    raise ValueError(f"{name} trains on one view per example (images [B, 1, H, W, C]), got "
                     f"{images.shape[1]} views: combine it with a one-view augmentation "
                     f"(plain, mixup)")


def pgd_at(*, eps: float = 8 / 255, steps: int = 10, step_size: float = 2 / 255) -> Objective:
  """PGD adversarial training (Madry et al. 2018): the mean loss on PGD examples. No state.

  The attack maximizes the method's own per-example criterion (``model.loss``, train mode)
  over every view, from a uniform random start (``key``). ``steps`` steps cost ``steps``
  forward/backward passes on top of the training pass.
  """
  _check_adv(eps, steps, step_size)

  def apply(key, state, model, images, targets, ctx):
    del ctx
    adv = linf_pgd_ascent(key, lambda z: model.loss(z, targets)[0], images, eps=eps,
                          step_size=step_size, num_steps=steps, start="uniform")
    losses, model_aux = model.loss(adv, targets)
    return jnp.mean(losses), ObjectiveAux(losses, model_aux, {}), state

  return Objective(stateless_init, apply)


def trades(*, beta: float = 6.0, eps: float = 8 / 255, steps: int = 10,
           step_size: float = 2 / 255) -> Objective:
  r"""TRADES (Zhang et al. 2019): CE(clean) + ``beta`` x KL(p_clean || p_adv). No state.

  The adversarial example maximizes the KL to the clean prediction (inference-mode model,
  start ``x + 0.001 N(0, I)``). One view per example.
  """
  _check_adv(eps, steps, step_size, beta)

  def apply(key, state, model, images, targets, ctx):
    del ctx
    _one_view("trades", images)
    p_clean = jax.lax.stop_gradient(model.eval_logits(images))
    adv = linf_pgd_ascent(key, lambda z: _losses.trades_kl(p_clean, model.eval_logits(z)),
                          images, eps=eps, step_size=step_size, num_steps=steps, start="normal")
    logits, model_aux = model.logits(images)
    logits_adv, _ = model.logits(adv)
    kl = _losses.trades_kl(logits, logits_adv)
    losses = _losses.cross_entropy(logits, targets) + beta * kl
    return jnp.mean(losses), ObjectiveAux(losses, model_aux, {"robust_kl": jnp.mean(kl)}), state

  return Objective(stateless_init, apply)


def mart(*, beta: float = 6.0, eps: float = 8 / 255, steps: int = 10,
         step_size: float = 2 / 255) -> Objective:
  """MART (Wang et al. 2020): :func:`drojax.losses.mart_loss` on PGD examples. No state.

  The adversarial example maximizes the cross-entropy (inference-mode model, start
  ``x + 0.001 N(0, I)``). Labels are the targets' argmax (MART's formula needs a class; use it
  with one-hot targets, i.e. the plain augmentation). One view per example.
  """
  _check_adv(eps, steps, step_size, beta)

  def apply(key, state, model, images, targets, ctx):
    del ctx
    _one_view("mart", images)
    adv = linf_pgd_ascent(key, lambda z: _losses.cross_entropy(model.eval_logits(z), targets),
                          images, eps=eps, step_size=step_size, num_steps=steps, start="normal")
    logits, model_aux = model.logits(images)
    logits_adv, _ = model.logits(adv)
    labels = jnp.argmax(targets, axis=-1)
    losses = _losses.mart_loss(logits, logits_adv, labels, beta=beta)
    return jnp.mean(losses), ObjectiveAux(losses, model_aux, {}), state

  return Objective(stateless_init, apply)
