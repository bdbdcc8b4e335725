"""Objectives: how per-example losses become the scalar a train step differentiates.

Optax-style ``(init, apply)`` pairs with their own state (:mod:`drojax.objectives.base`):

* :func:`mean` (ERM), in ``base``;
* :func:`wdro` (DRO-Augment's variation penalty), :func:`var_dro` (its state: the variance
  tracker; :func:`tracked_weights`, its weights of a batch), :func:`kl_dro`, :func:`cvar`, in
  :mod:`~drojax.objectives.dro`;
* :func:`pgd_at`, :func:`trades`, :func:`mart` (adversarial training), in
  :mod:`~drojax.objectives.adversarial`;
* :func:`group_dro` (its state: the group weights), :func:`vrex`, :func:`irm`,
  :func:`var_dro_vrex`, :func:`weighted_erm` (JTT's second stage), in
  :mod:`~drojax.objectives.group`.

The pure core: imports JAX only (no Flax, Optax, Orbax or TFDS).
"""

from drojax.objectives.adversarial import linf_pgd_ascent, mart, pgd_at, trades
from drojax.objectives.base import (ModelFns, Objective, ObjectiveAux, ObjectiveContext,
                                    all_gather, mean, stateless_init, weight_entropy)
from drojax.objectives.dro import (cvar, cvar_risk, kl_dro, kl_dro_risk, tracked_weights,
                                  var_dro, wdro)
from drojax.objectives.group import (GroupDROState, group_dro, irm, var_dro_vrex, vrex,
                                     weighted_erm)

__all__ = ["GroupDROState", "group_dro", "irm", "var_dro_vrex", "vrex", "weighted_erm",
           "ModelFns", "Objective", "ObjectiveAux", "ObjectiveContext", "all_gather", "cvar",
           "cvar_risk", "kl_dro", "kl_dro_risk", "linf_pgd_ascent", "mart", "mean", "pgd_at",
           "stateless_init", "tracked_weights", "trades", "var_dro", "wdro", "weight_entropy"]
