r"""A rho (or eps_max) sweep over one method, and a clean-vs-corrupted Pareto plot.

  python -m experiments.sweep --method=dro_augmix --param=rho --values=0,0.3,1,3 \
      --dataset=cifar10 --workdir=runs/sweep_rho
  python -m experiments.sweep --method=var_dro --param=eps_max --values=0,0.5,1,2 \
      --preset=quick --dataset=digits --workdir=runs/sweep_eps

Each value trains into ``WORKDIR/<param>_<value>``; ``WORKDIR/sweep.json``, ``sweep.md`` and
``pareto.png`` (clean accuracy vs mean corruption accuracy, the Pareto-optimal runs joined)
summarise them, and ``WORKDIR/comparison.*`` compares the runs.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli, flag_defs, multi
from experiments.overrides import apply_overrides
from experiments.pareto import parse_values, summarize
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config

FLAGS = flags.FLAGS

PARAMS = {"rho": "rho", "eps_max": "var_dro_eps_max", "trades_beta": "trades_beta",
          "mart_beta": "mart_beta", "adv_eps": "adv_eps"}


def build_configs(overrides) -> tuple[list[float], list]:
  flag_defs.check_choice(FLAGS.param, list(PARAMS), "--param")
  flag_defs.check_run_flags()
  values = parse_values(FLAGS.values, FLAGS.param)
  configs = []
  for v in values:
    config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset)
    flag_defs.set_run_fields(apply_overrides(config, overrides))
    with config.unlocked():
      config.method_config[PARAMS[FLAGS.param]] = v
    reason = common.not_applying(config, "method_config." + PARAMS[FLAGS.param])
    if reason:  # e.g. rho for var_dro: every run would train the same model
      raise cli.UsageError(f"--param={FLAGS.param} has no effect: {reason}")
    configs.append((f"{FLAGS.param}_{v:g}", config))
  return values, configs


@flag_defs.uses("method", "dataset", "preset", "workdir", "data_dir", "compilation_cache_dir",
                own={"param": ("string", "rho", "rho (W-DRO penalty weight) | eps_max (Var-DRO "
                               "radius) | trades_beta | mart_beta | adv_eps (adversarial "
                               "training)."),
                     "values": ("string", "0,0.3,1,3", "Comma-separated non-negative values.")})
def main(argv, overrides):
  del argv
  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  values, configs = build_configs(overrides)
  workdirs = multi.run_all(configs, FLAGS.workdir)
  import jax

  if jax.process_index() == 0:
    summarize(FLAGS.workdir, FLAGS.param, values, workdirs)
    print(f"sweep: {os.path.join(FLAGS.workdir, 'sweep.md')}, "
          f"{os.path.join(FLAGS.workdir, 'pareto.png')}")


if __name__ == "__main__":
  cli.run_main(main, help_config=lambda: build_configs([])[1][0][1])
