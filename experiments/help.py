"""``--help``, ``-h`` and ``--helpfull`` of the experiment CLIs, generated, never written by hand.

absl's own help flags exit with status 1 and know nothing of ``--config.*``; ``cli.run_main`` asks
:func:`requested` first and :func:`print_help` prints :func:`text` (status 0): absl's layout (the
CLI module's docstring, its flags; ``--helpfull`` every module's), then, for a CLI that takes
``--config.*``, the methods, datasets, presets and every config field with its type, range and
default, read from what validation reads (``common.config_specs``, the method registry).
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any, Callable, Sequence

SHORT = ("--help", "-h", "-?", "--helpshort")
FULL = ("--helpfull",)


def requested(argv: Sequence[str]) -> str | None:
  """``'short'`` or ``'full'`` when ``argv[1:]`` asks for help (before a ``--``), else None."""
  for arg in argv[1:]:
    if arg == "--":
      return None
    if arg in FULL:
      return "full"
    if arg in SHORT:
      return "short"
  return None


def _module_flags(module_name: str, module_file: str | None, full: bool) -> str:
  from absl import flags

  registry = flags.FLAGS
  if full:
    return registry.get_help()
  by_module = registry.flags_by_module_dict()
  # The CLI's own flags, and the shared ones it uses (registered by experiments.flag_defs).
  keys = [k for k in (module_file, sys.argv[0] if module_name == "__main__" else None,
                      module_name, "experiments.flag_defs") if k and k in by_module]
  return "\n".join(registry.module_help(k) for k in dict.fromkeys(keys))


def _wrap(label: str, text: str, indent: int = 4) -> list[str]:
  return textwrap.wrap(f"{label}{text}", width=100, subsequent_indent=" " * indent,
                       break_on_hyphens=False) or [label]


def config_text(config: Any) -> str:
  """The ``--config.*`` section for ``config`` (its values are shown as the defaults).

  Raises:
    KeyError: a field of ``config`` has no spec (validation would refuse it too).
  """
  from drojax import methods
  from drojax.data import registry
  from drojax.specs import flatten
  from experiments.configs import common

  specs = common.config_specs(config)
  lines = ["", "--config.<field>=VALUE overrides a field of the config (see below), e.g. "
           "--config.num_epochs=50.", "", "methods (--method; --config.method_config.* their "
           "hyper-parameters):"]
  for name in methods.method_names():
    try:
      description = methods.get_method(name).description or "(no description)"
    except (ValueError, TypeError) as e:  # a user's method that needs other hyper-parameters
      description = f"(no description: {e})"
    lines += _wrap(f"  {name}: ", description)
  lines += ["", "datasets (--dataset): " + ", ".join(registry.DATASETS) +
            ", npz:PATH (your own .npz arrays)"]
  lines += ["presets (--preset): " + ", ".join(common.PRESETS)]
  lines += ["", f"config fields (defaults for --method={config.method} --preset={config.preset} "
            f"--dataset={config.dataset}):"]
  for path, value in flatten(config).items():
    lines += _wrap(f"  --config.{path}: ", f"{specs[path].describe()}; default: {value!r}", 6)
  return "\n".join(lines)


def text(module_name: str, *, full: bool, config_fn: Callable[[], Any] | None = None) -> str:
  """The help of the CLI whose ``main`` lives in ``module_name``.

  Args:
    module_name: ``main.__module__`` (``'__main__'`` under ``python -m``).
    full: ``--helpfull``: every module's flags, not only the CLI's.
    config_fn: builds the config the parsed flags select, without overrides; None for a CLI
      that takes no ``--config.*``.
  """
  # Run with python -m, the CLI's module is __main__ (not imported under its name).
  module = sys.modules.get(module_name) or sys.modules.get("__main__")
  module_file = getattr(module, "__file__", None)
  doc = (getattr(module, "__doc__", None) or "").strip("\n")
  prog = f"python -m {module_name}" if module_name != "__main__" else sys.argv[0]
  out = [f"USAGE: {prog} [flags]" + (" [--config.<field>=VALUE ...]" if config_fn else "")]
  if doc:
    out += ["", doc]
  flag_help = _module_flags(module_name, module_file, full)
  out += ["", "flags:", flag_help.strip("\n") if flag_help else "  (none)"]
  out += ["", "  --verbose: print the traceback of an anticipated error too (also "
          "DROJAX_VERBOSE=1)", "  -h, --help: this help; --helpfull: every module's flags too"]
  if config_fn is not None:
    out.append(config_text(config_fn()))
  return "\n".join(out) + "\n"


def print_help(module_name: str, argv: Sequence[str], *, full: bool,
               config_fn: Callable[[], Any] | None) -> None:
  """Parses the other flags (they select the config whose defaults are shown) and prints."""
  from absl import flags

  from drojax.specs import ConfigError
  from experiments import flag_defs
  from experiments.cli import UsageError

  try:
    flag_defs.parse([a for a in argv if a not in SHORT + FULL])  # users' methods listed too
    out = text(module_name, full=full, config_fn=config_fn)
  except (UsageError, ConfigError) as e:  # help for the defaults instead
    flags.FLAGS.unparse_flags()
    flags.FLAGS.mark_as_parsed()
    out = text(module_name, full=full, config_fn=config_fn) + (
        f"\n(the other flags were not usable, so the defaults are shown: {e})\n")
  print(out, end="", flush=True)

