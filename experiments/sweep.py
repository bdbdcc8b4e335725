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

from experiments import cli, multi
from experiments.pareto import pareto_front, parse_values, summarize  # noqa: F401
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dro_augmix", "The method whose parameter is swept.")
flags.DEFINE_string("param", "rho", "rho (W-DRO penalty weight) | eps_max (Var-DRO radius) | "
                    "trades_beta | mart_beta | adv_eps (adversarial training).")
flags.DEFINE_string("values", "0,0.3,1,3", "Comma-separated non-negative values.")
cli.define_flags("dataset", "preset", "workdir", "data_dir", "compilation_cache_dir")

PARAMS = {"rho": "rho", "eps_max": "var_dro_eps_max", "trades_beta": "trades_beta",
          "mart_beta": "mart_beta", "adv_eps": "adv_eps"}


def build_configs(overrides) -> tuple[list[float], list]:
  cli.check_choice(FLAGS.param, list(PARAMS), "--param")
  cli.check_run_flags()
  values = parse_values(FLAGS.values, FLAGS.param)
  configs = []
  for v in values:
    config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset)
    cli.set_run_fields(cli.apply_overrides(config, overrides))
    with config.unlocked():
      config.method_config[PARAMS[FLAGS.param]] = v
    reason = common.not_applying(config, "method_config." + PARAMS[FLAGS.param])
    if reason:  # e.g. rho for var_dro: every run would train the same model
      raise cli.UsageError(f"--param={FLAGS.param} has no effect: {reason}")
    configs.append((f"{FLAGS.param}_{v:g}", config))
  return values, configs


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
