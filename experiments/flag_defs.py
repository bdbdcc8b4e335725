"""The flags the experiment CLIs share, one definition and help text each, defined when a CLI runs
(:func:`define`, called by ``cli.run_main`` for the flags its ``main`` declares with :func:`uses`),
never at import: two CLI modules in one process must not collide in absl's registry.
``--import=MODULE[,MODULE...]`` (every CLI) imports a user's modules before the flags are read,
so the methods they register are valid ``--method`` values (docs/architecture.md, "Adding a
method").
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import ml_collections
from absl import flags

from drojax.specs import suggest
from experiments.cli import UsageError

IMPORT_FLAG = "--import"
# name -> (absl kind, default, help)
FLAGS: dict[str, tuple[str, Any, str]] = {
    "import": ("list", [], "Modules to import first (comma-separated), e.g. a user's module that "
               "registers its own methods with drojax.methods.register: --import=my_methods "
               "makes --method=my_method valid."),
    "method": ("string", "dro_augmix", "Training method (see drojax.methods.method_names())."),
    "methods": ("string", "erm,dro", "Comma-separated methods to train and compare."),
    "workdir": ("string", None, "Run directory (checkpoints, metrics, results; a re-run resumes). "
                "Multi-run CLIs: the root, one sub-directory per run."),
    "preset": ("string", "paper", "paper (the DRO-Augment recipe) | quick (CPU-sized)."),
    "dataset": ("string", "cifar10", "cifar10 | cifar100 | digits | fashion_mnist | waterbirds | "
                "colored_digits | colored_fashion_mnist | dominoes | npz:PATH"),
    "eval_corruptions": ("string", None, "published (CIFAR-10-C arrays) | generated (on the fly, "
                         "standard table) | refined (on the fly, refined table). Default: the "
                         "config's."),
    "data_dir": ("string", None, "Where to look for data first (default $DROJAX_DATA_DIR)."),
    "download": ("bool", False, "Download CIFAR archives (checksummed) if not found."),
    "compilation_cache_dir": ("string", None, "JAX persistent compilation cache (default "
                              "~/.cache/drojax/jax; 'none' off)."),
}


def define(*names: str, own: dict[str, tuple[str, Any, str]] | None = None,
           **defaults: Any) -> None:
  """Defines the flags ``names`` (``FLAGS``' help text) and a CLI's ``own`` flags (``{name:
  (kind, default, help)}``) in absl's registry; ``defaults`` replace the default of some
  (``define("methods", methods="erm,kl_dro")``). A flag defined already (an earlier run in this
  process) gets this run's default."""
  table = {**FLAGS, **(own or {})}
  for name in [*names, *(own or {})]:
    kind, default, help_text = table[name]
    default = defaults.get(name, default)
    if name in flags.FLAGS:
      flags.FLAGS.set_default(name, default)
    else:
      getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


def uses(*names: str, own: dict[str, tuple[str, Any, str]] | None = None,
         **defaults: Any) -> Callable[[Callable], Callable]:
  """Decorator of a CLI's ``main``: the flags it reads (arguments of :func:`define`), defined
  by ``cli.run_main`` before it parses argv."""

  def mark(main: Callable) -> Callable:
    main.flags_used = (names, dict(defaults, own=own))
    return main

  return mark


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
  """Raises ``UsageError`` (with a suggestion) unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise UsageError(f"unknown {flag} '{value}'; expected one of {', '.join(choices)}."
                     f"{suggest(value, choices)}")
  return value


def check_run_flags(*, dataset: bool = True) -> None:
  """``UsageError`` for a bad ``--preset`` or (``dataset``) ``--dataset``."""
  from drojax.data.registry import validate_name
  from experiments.configs import common

  check_choice(flags.FLAGS.preset, common.PRESETS, "--preset")
  if dataset:
    try:
      validate_name(flags.FLAGS.dataset)
    except ValueError as e:
      raise UsageError(f"--dataset: {e}") from None


def set_run_fields(config: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """Writes where data and caches are (``data_dir``, ``download``, ``compilation_cache_dir``)
  into ``config``: from ``values``, else from the flags where defined; unset ones stay."""
  with config.unlocked():
    for name in ("data_dir", "download", "compilation_cache_dir"):
      value = values.get(name, flags.FLAGS[name].value if name in flags.FLAGS else None)
      if value is not None and value != "":
        config[name] = value
  return config


def parse(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """``(leftovers, overrides)`` of ``argv``: ``--import``'s modules imported, then absl's flags
  parsed from their defaults; ``UsageError`` for a bad flag."""
  from experiments.overrides import split_config_overrides

  rest, overrides = split_config_overrides(argv)
  _import_modules(rest)  # before the flags: --method sees the users' methods
  flags.FLAGS.unparse_flags()  # a second run in one process (tests) starts from defaults
  try:
    return flags.FLAGS(rest), overrides
  except flags.Error as e:
    raise UsageError(" ".join(str(e).split())) from None


def _import_modules(argv: Sequence[str]) -> None:
  """Imports every module named by ``--import=A,B`` (or ``--import A``) in ``argv``.

  A module that is not found is a ``UsageError`` naming it; an error raised while the module
  runs is its own (a bug in it keeps its traceback).
  """
  import importlib

  names = []
  for i, arg in enumerate(argv):
    if arg.startswith(IMPORT_FLAG + "="):
      names += arg[len(IMPORT_FLAG) + 1:].split(",")
    elif arg == IMPORT_FLAG and i + 1 < len(argv):
      names += argv[i + 1].split(",")
  for name in filter(None, map(str.strip, names)):
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
        raise  # the module itself imports something missing
      raise UsageError(f"{IMPORT_FLAG}: no module named {e.name!r} (a module on PYTHONPATH or "
                       "in the current directory, e.g. --import=my_methods for my_methods.py)"
                       ) from None
