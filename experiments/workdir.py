"""A run's work directory: ``config.json`` written once (atomically); a re-run with the same
config but for ``RUN_ONLY_FIELDS`` resumes, another config is refused naming what differs."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import ml_collections

from drojax.specs import flatten
from experiments import cli

# Fields that may differ between runs in the same workdir (where data comes from, caches, and
# evaluation-only settings do not change what is trained).
RUN_ONLY_FIELDS = ("data_dir", "download", "compilation_cache_dir", "progress")


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A JSON-able dict of the config (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _diff(old: dict, new: dict) -> list[str]:
  a, b = flatten(old), flatten(new)
  absent = "<absent>"
  return [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}" for k in sorted({*a, *b})
          if k.split(".")[0] not in RUN_ONLY_FIELDS and a.get(k, absent) != b.get(k, absent)]


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Read-only: whether ``workdir`` holds this config already (a resume); writes nothing.

  Raises:
    UsageError naming the differing fields when the workdir holds another config;
    EnvironmentFault when ``workdir`` exists and is not a directory.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise cli.EnvironmentFault(f"--workdir {workdir}: exists and is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return False
  try:
    with open(path) as f:
      old = json.load(f)
  except json.JSONDecodeError:
    raise cli.UsageError(f"{path} is not valid JSON; use a fresh --workdir") from None
  except OSError as e:
    raise cli.EnvironmentFault(f"cannot read {path}: {cli.describe_os_error(e)}") from None
  diff = _diff(old, config_to_dict(config))
  if diff:
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    raise cli.UsageError(f"workdir {workdir} holds a run with a different config ({shown}); "
                         "use another --workdir or the same flags")
  return True


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                    write: bool = True) -> bool:
  """Creates ``workdir`` and writes ``config.json`` (``write=False``, the processes but 0 of a
  multi-process run: only checks an existing one); True when it held this config already (the
  run resumes). Call it once everything checkable has been checked: a failed start must not
  leave a ``config.json`` that refuses the corrected command. ``UsageError`` names the fields
  that differ from the workdir's config; ``EnvironmentFault`` a workdir that cannot be written.
  """
  if check_workdir(workdir, config):
    return True
  if not write:
    return False
  path = os.path.join(workdir, "config.json")
  tmp = path + ".tmp"
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(tmp, "w") as f:
      json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise cli.EnvironmentFault(f"--workdir {workdir}: cannot write {e.filename or path}: "
                               f"{cli.describe_os_error(e)}") from None
  return False
