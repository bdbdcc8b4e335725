"""Typed hyper-parameter specs: how a field's text is parsed and which values it accepts.

A spec describes one configuration field (a ``MethodConfig`` field, a user method's own field,
an experiment config's field): ``parse(text)`` reads a ``--config.<field>=TEXT`` override by the
field's declared type (not the type of its current value: an empty tuple knows its item type),
``check(value)`` returns what was expected when the value is bad, and ``describe()`` says it in
words (``--help``). Numbers accept a fraction ``a/b`` (``8/255``), as the papers write budgets;
tuples accept ``1,5``, ``(1, 5)``, ``[1, 5]`` or a single item.

Pure Python: no JAX, no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Callable, Sequence


class ConfigError(ValueError):
  """A config field holds a bad value; ``field`` is its dotted path, ``detail`` the reason."""

  def __init__(self, field: str, detail: str):
    self.field = field
    self.detail = detail
    super().__init__(f"{field}: {detail}")


def suggest(value: str, options: Sequence[str]) -> str:
  """`` Did you mean 'x'?`` for the closest option, else ``''``."""
  close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
  return f" Did you mean '{close[0]}'?" if close else ""


def _parse_number(text: str) -> float:
  s = text.strip()
  if "/" in s:
    num, _, den = s.partition("/")
    a, b = float(num), float(den)  # ValueError on junk
    if b == 0:
      raise ValueError(f"division by zero in {text!r}")
    return a / b
  return float(s)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Base: a description for messages, a parser from text and a check of a value."""

  def describe(self) -> str:
    """The accepted values in words (messages, ``--help``)."""
    raise NotImplementedError

  def parse(self, text: str) -> Any:
    raise NotImplementedError

  def check(self, value: Any) -> str | None:
    """None when ``value`` is acceptable, else what was expected (one phrase)."""
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Real(Spec):
  """A real number in ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``); NaN never."""

  lo: float = -math.inf
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False
  allow_inf: bool = False
  hint: str = ""

  def describe(self) -> str:
    parts = []
    if self.lo > -math.inf:
      parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
    if self.hi < math.inf:
      parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
    what = "a number" if self.allow_inf else "a finite number"
    return what + (" " + " and ".join(parts) if parts else "") + (
        " (inf allowed)" if self.allow_inf else "")

  def parse(self, text: str) -> float:
    try:
      return _parse_number(text)
    except (ValueError, ZeroDivisionError):
      raise ValueError(f"expected {self.describe()} (a fraction like 8/255 is fine), got "
                       f"{text!r}") from None

  def check(self, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return f"expected {self.describe()}, got {value!r} ({type(value).__name__})"
    v = float(value)
    bad = (math.isnan(v) or (math.isinf(v) and not self.allow_inf)
           or (v <= self.lo if self.lo_open else v < self.lo)
           or (v >= self.hi if self.hi_open else v > self.hi))
    if bad:
      return f"expected {self.describe()}, got {value!r}{self.hint}"
    return None


@dataclasses.dataclass(frozen=True)
class Int(Spec):
  """An integer in ``[lo, hi]``; ``also`` lists extra allowed values (e.g. -1 = random)."""

  lo: int | None = None
  hi: int | None = None
  also: tuple[int, ...] = ()

  def describe(self) -> str:
    rng = []
    if self.lo is not None:
      rng.append(f">= {self.lo}")
    if self.hi is not None:
      rng.append(f"<= {self.hi}")
    out = "an integer" + (" " + " and ".join(rng) if rng else "")
    return out + "".join(f" or {a}" for a in self.also)

  def parse(self, text: str) -> int:
    try:
      return int(text.strip())
    except ValueError:
      raise ValueError(f"expected {self.describe()}, got {text!r}") from None

  def check(self, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      return f"expected {self.describe()}, got {value!r} ({type(value).__name__})"
    if value in self.also:
      return None
    if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
      return f"expected {self.describe()}, got {value!r}"
    return None


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
  """true/false (also 1/0, yes/no)."""

  def describe(self) -> str:
    return "true/false"

  def parse(self, text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")

  def check(self, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true/false, got {value!r}"


@dataclasses.dataclass(frozen=True)
class Str(Spec):
  """Any string (paths: their existence is the loader's check, with the file named)."""

  def describe(self) -> str:
    return "a string"

  def parse(self, text: str) -> str:
    return text

  def check(self, value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {value!r}"


@dataclasses.dataclass(frozen=True)
class Choice(Spec):
  """One of ``options`` (a tuple, or a callable returning them: registries fill at import)."""

  options: tuple[str, ...] | Callable[[], Sequence[str]] = ()

  def describe(self) -> str:
    return "one of " + ", ".join(self.values())

  def values(self) -> list[str]:
    return list(self.options() if callable(self.options) else self.options)

  def parse(self, text: str) -> str:
    return text.strip()

  def check(self, value: Any) -> str | None:
    opts = self.values()
    if value in opts:
      return None
    return f"unknown value {value!r}; expected one of {', '.join(opts)}.{suggest(value, opts)}"


@dataclasses.dataclass(frozen=True)
class Custom(Spec):
  """A string checked by ``fn(value)``, which raises ``ValueError`` (or ``TypeError``) with the
  reason."""

  fn: Callable[[str], Any] = str
  what: str = "a string"

  def describe(self) -> str:
    return self.what

  def parse(self, text: str) -> str:
    return text.strip()

  def check(self, value: Any) -> str | None:
    if not isinstance(value, str):
      return f"expected {self.what}, got {value!r}"
    try:
      self.fn(value)
    except (ValueError, TypeError) as e:
      return str(e)
    return None


@dataclasses.dataclass(frozen=True)
class Tuple(Spec):
  """A tuple of ``item`` values; ``unique`` forbids repeats, ``min_len`` sets a minimum."""

  item: Spec = Str()
  unique: bool = False
  min_len: int = 0

  def describe(self) -> str:
    return f"a tuple of {self.item.describe()}" + (", no repeats" if self.unique else "")

  def parse(self, text: str) -> tuple:
    s = text.strip()
    if len(s) >= 2 and s[0] + s[-1] in ("()", "[]"):
      s = s[1:-1]
    parts = [p.strip() for p in s.split(",")]
    if parts and parts[-1] == "":
      parts = parts[:-1]  # "(0.01,)"
    out = []
    for i, p in enumerate(parts):
      if not p:
        raise ValueError(f"empty item {i} in {text!r}")
      quoted = len(p) >= 2 and p[0] == p[-1] and p[0] in "'\""
      if quoted and isinstance(self.item, (Str, Choice, Custom)):
        p = p[1:-1]
      try:
        out.append(self.item.parse(p))
      except ValueError as e:
        raise ValueError(f"item {i}: {e}") from None
    return tuple(out)

  def check(self, value: Any) -> str | None:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      return f"expected a tuple, got {value!r}"
    if len(value) < self.min_len:
      return f"expected at least {self.min_len} item(s), got {tuple(value)!r}"
    for i, v in enumerate(value):
      err = self.item.check(v)
      if err:
        return f"item {i}: {err}"
    if self.unique and len(set(value)) != len(value):
      return f"expected no repeated items, got {tuple(value)!r}"
    return None


def flatten(config: Any, *, prefix: str = "") -> dict[str, Any]:
  """``{dotted_path: value}`` for every leaf of a nested mapping (a dict, an ``ml_collections``
  ``ConfigDict``: anything with ``items()``).

  >>> flatten({"lr": 0.1, "eval": {"eps": (1, 2)}})
  {'lr': 0.1, 'eval.eps': (1, 2)}
  """
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(flatten(value, prefix=f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_fields(config: Any, specs: dict[str, Spec]) -> None:
  """Checks every leaf of ``config`` (:func:`flatten`) against ``specs`` (dotted paths).

  A field without a spec is itself an error: a config must not carry an unchecked field.

  Raises:
    ConfigError: naming the first bad or unchecked field.
  """
  for path, value in flatten(config).items():
    spec = specs.get(path)
    if spec is None:
      raise ConfigError(path, "no check is declared for this field (add a spec next to the "
                        "config factory that defines it)")
    err = spec.check(value)
    if err:
      raise ConfigError(path, err)


def for_default(default: Any) -> Spec:
  """The spec a bare default implies: its type, any value (``fields={"gamma": 2.0}``)."""
  if isinstance(default, bool):
    return Bool()
  if isinstance(default, numbers.Integral):
    return Int()
  if isinstance(default, numbers.Real):
    return Real(allow_inf=not math.isfinite(default))
  if isinstance(default, str):
    return Str()
  raise TypeError(f"a field's default must be a bool, int, float or str, got {default!r} "
                  f"({type(default).__name__}); pass a spec for anything else")


__all__ = ["ConfigError", "Spec", "Real", "Int", "Bool", "Str", "Choice", "Custom", "Tuple",
           "for_default", "suggest", "flatten", "check_fields"]
