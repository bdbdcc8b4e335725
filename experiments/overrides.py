"""``--config.<a.b>=VALUE``: pulled out of argv (absl does not know them), parsed by the field's
spec (``common.config_specs``: numbers accept ``a/b``, tuples ``1,5`` or ``(1, 5)``; a typo gets
the closest field) and written into a locked ``ConfigDict``. Not ``ml_collections.config_flags``:
it parses by the current value's type (``8/255`` and an empty tuple's items fail) and answers a
typo with a multi-line traceback.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from drojax.specs import ConfigError, suggest
from experiments.cli import UsageError
from experiments.configs import common

PREFIX = "--config."
# Config fields that CLIs set from their own flag of the same name: errors name that flag.
RUN_FLAGS = ("method", "dataset", "preset", "data_dir", "download", "compilation_cache_dir")


def config_usage_error(e: ConfigError) -> UsageError:
  """A ``ConfigError`` as the one-line usage error naming the flag (``--method`` or
  ``--config.<field>``)."""
  return UsageError(f"{'--' if e.field in RUN_FLAGS else PREFIX}{e.field}: {e.detail}")


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates ``--config.a.b=v`` (or ``--config.a.b v``) from the other arguments.

  >>> split_config_overrides(["prog", "--config.lr=0.1", "--method=erm"])
  (['prog', '--method=erm'], [('lr', '0.1')])
  """
  rest, overrides = [], []
  args = iter(argv)
  for arg in args:
    if not arg.startswith(PREFIX):
      rest.append(arg)
      continue
    key, equals, value = arg[len(PREFIX):].partition("=")
    if not equals and (value := next(args, None)) is None:
      raise UsageError(f"{arg} needs a value (--config.FIELD=VALUE)")
    overrides.append((key, value))
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]], *,
                    check_applies: bool = True) -> ml_collections.ConfigDict:
  """Applies ``(dotted_field, text)`` overrides in place; unknown fields raise ``UsageError``.

  With ``check_applies``, an override of a field that the config's method or set-up does not
  read is an error (``common.not_applying``); multi-method CLIs check that across methods
  instead (``check_overrides_apply``).
  """
  specs = common.config_specs(config)
  for dotted, text in overrides:
    node, parts = config, dotted.split(".")
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict):
        raise UsageError(f"config field '{'.'.join(parts[:depth])}' has no sub-fields")
      if part not in node:
        raise UsageError(f"unknown config field '{dotted}' ('{part}' is not in "
                         f"{'.'.join(parts[:depth]) or 'config'}).{suggest(part, list(node))}")
      parent, node = node, node[part]
    if isinstance(node, ml_collections.ConfigDict):
      raise UsageError(f"config field '{dotted}' is a group; set one of its fields: "
                       f"{', '.join(node.keys())}")
    if dotted not in specs:
      raise UsageError(f"config field '{dotted}' has no declared check (add a spec next to the "
                       "config factory that defines it)")
    try:
      value = specs[dotted].parse(text)
    except ValueError as e:
      raise UsageError(f"{PREFIX}{dotted}: {e}") from None
    with parent.unlocked():
      parent[parts[-1]] = value
  if check_applies:
    check_overrides_apply([config], overrides)
  return config


def check_overrides_apply(configs: Sequence[ml_collections.ConfigDict],
                          overrides: Sequence[tuple[str, str]]) -> None:
  """``UsageError`` for an override that no config in ``configs`` reads (one that only some
  read is fine: a comparison of methods)."""
  for dotted, _ in overrides:
    reasons = [common.not_applying(c, dotted) for c in configs]
    if configs and all(reasons):
      which = "" if len(configs) == 1 else " for any of the methods"
      raise UsageError(f"{PREFIX}{dotted} has no effect{which}: {reasons[0]}; drop it")
