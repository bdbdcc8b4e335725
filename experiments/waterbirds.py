r"""Waterbirds: ERM vs KL-DRO vs Var-DRO, worst-group and average accuracy.

  python -m experiments.waterbirds --methods=erm,kl_dro,var_dro \
      --data_dir=/path/to/waterbird_complete95_forest2water2 --workdir=runs/waterbirds

``--data_dir`` is a folder with ``metadata.csv`` (img_filename, y, place, split) and the images
(group = 2 * y + place). Each method trains into ``WORKDIR/<method>``; the results hold the
per-group, worst-group and average accuracy (groups weighted by their training proportions),
and ``WORKDIR/comparison.md`` compares the methods.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, multi
from experiments.configs import waterbirds as wb_config

FLAGS = flags.FLAGS

main, help_config = multi.methods_cli(
    lambda m: wb_config.make_config(m, preset=FLAGS.preset),
    "methods", "preset", "workdir", "data_dir", "compilation_cache_dir",
    methods="erm,kl_dro,var_dro")


if __name__ == "__main__":
  cli.run_main(main, help_config=help_config)
