"""Running several configs into sub-workdirs of one root, then one comparison table/chart."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from experiments import cli, flag_defs
from experiments.overrides import apply_overrides, check_overrides_apply


def parse_list(text: str, flag: str) -> list[str]:
  """Splits a comma-separated flag value; an empty list is a usage error."""
  items = [s.strip() for s in (text or "").split(",") if s.strip()]
  if not items:
    raise cli.UsageError(f"{flag} needs at least one value (comma-separated)")
  return items


def run_all(configs: Sequence[tuple[str, Any]], root: str) -> list[str]:
  """Validates every ``(name, config)`` first, then runs each into ``root/<name>`` and writes
  ``root/comparison.*`` (``reporting.compare_runs``). Returns the workdirs."""
  import jax

  from experiments import reporting, train

  for _, config in configs:  # fail on a bad value before the first run trains for an hour
    train.validate(config, num_devices=jax.device_count())
  workdirs = []
  for name, config in configs:
    workdir = os.path.join(root, name)
    train.train_and_evaluate(config, workdir)
    workdirs.append(workdir)
  if jax.process_index() == 0:
    paths = reporting.compare_runs(workdirs, root)
    print("== comparison of " + ", ".join(workdirs) + "\n   tables: " + paths["md"]
          + "\n   plots:  " + " ".join(p for k, p in sorted(paths.items()) if k.endswith("png")),
          flush=True)
  return workdirs


def method_configs(methods: str, make: Callable[[str], Any],
                   overrides: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
  """One ``(method, config)`` per name in the comma-separated ``--methods`` value: ``make(method)``
  with the ``--config.<field>=`` overrides and the shared run flags applied."""
  from drojax.methods import method_names

  out = []
  for method in parse_list(methods, "--methods"):
    flag_defs.check_choice(method, method_names(), "--methods entry")
    config = make(method)
    flag_defs.set_run_fields(apply_overrides(config, overrides, check_applies=False))
    out.append((method, config))
  # An override no method reads is an error; one that only some read is fine (a comparison).
  check_overrides_apply([c for _, c in out], overrides)
  return out


def methods_cli(make: Callable[[str], Any], *flag_names: str, **defaults: Any):
  """``(main, help_config)`` of a multi-method CLI that reads the flags ``flag_names`` (with
  ``defaults``, as ``flag_defs.uses``): per ``--methods`` entry, ``make(method)`` with the
  overrides and run flags applied, trained into ``--workdir/<method>``, then compared."""
  from absl import flags

  def build_configs(overrides: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    flag_defs.check_run_flags(dataset="dataset" in flag_names)
    return method_configs(flags.FLAGS.methods, make, overrides)

  @flag_defs.uses(*flag_names, **defaults)
  def main(argv, overrides):
    del argv
    if not flags.FLAGS.workdir:
      raise cli.UsageError("--workdir is required")
    run_all(build_configs(overrides), flags.FLAGS.workdir)

  return main, lambda: build_configs([])[0][1]
