r"""One table and one chart from several finished workdirs.

  python -m experiments.compare --workdirs=runs/c10_erm,runs/c10_dro_augmix --out=runs/compare

Writes ``OUT/comparison.md`` / ``.csv`` / ``.png`` (``experiments.reporting.compare_runs``).
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli, flag_defs, multi

FLAGS = flags.FLAGS


@flag_defs.uses(own={"workdirs": ("string", None, "Comma-separated workdirs holding "
                                  "results.json."),
                     "out": ("string", None, "Output directory (default: the current "
                             "directory).")})
def main(argv, overrides):
  del argv
  if overrides:
    raise cli.UsageError("compare takes no --config.* overrides")
  workdirs = multi.parse_list(FLAGS.workdirs, "--workdirs")
  for w in workdirs:
    if not os.path.isfile(os.path.join(w, "results.json")):
      raise cli.UsageError(f"{w} has no results.json (is the run finished?)")
  from experiments import reporting

  paths = reporting.compare_runs(workdirs, FLAGS.out or ".")
  print(f"compare: wrote {paths}")


if __name__ == "__main__":
  cli.run_main(main)
