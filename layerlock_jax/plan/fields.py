"""Reading config fields with a check: every rule violation becomes one `ConfigError`.

A `ConfigError` names the field by its dotted path (`config.model.num_heads`) and says, in one
line, what is wrong with the value and which flag fixes it. The plan raises it while deriving a
run, and config_validation raises it while checking one, so a rule's message is written once and
reads the same before JAX starts and in the middle of a run.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

EPS = 1e-9  # tolerance for float sums/products such as 2/3 * 48 = 31.999...


class ConfigError(ValueError):
  """One config problem: `.field` is the dotted path, `.message` a single line with the fix."""

  def __init__(self, field: str, message: str):
    # Collapse whitespace so the error stays one line in logs even if a value contains a newline.
    self.field = field
    self.message = " ".join(str(message).split())
    super().__init__(f"{field}: {self.message}")


def format_error(err: ConfigError) -> str:
  """The line the entry point prints before exiting with status 2."""
  return f"Config error: {err.field}: {err.message}"


def get(config: Any, path: str) -> Any:
  node = config
  for part in path.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(f"config.{path}", f"field {path!r} is missing; build configs from "
                        "layerlock_jax.config.defaults.base_config() so every field "
                        "exists") from None
  return node


def is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_seq(v: Any) -> bool:
  """A tuple/list-like value (a string is not a sequence of options here)."""
  return isinstance(v, Sequence) and not isinstance(v, str)


def fail(path: str, value: Any, problem: str, fix: str) -> ConfigError:
  return ConfigError(f"config.{path}", f"{path.rsplit('.', 1)[-1]}={value!r} {problem}; {fix}")


def choice(config: Any, path: str, choices: Sequence[str]) -> str:
  v = get(config, path)
  if v not in choices:
    raise fail(path, v, "is not a known option",
               f"use one of {', '.join(repr(c) for c in choices)} via --config.{path}=NAME")
  return v


def integer(config: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
  """An integer in [lo, hi] (either bound optional)."""
  v = get(config, path)
  if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
    if lo is None and hi is None:
      want = "an integer"
    elif hi is None:
      want = f"an integer >= {lo}"
    elif lo is None:
      want = f"an integer <= {hi}"
    else:
      want = f"an integer in [{lo}, {hi}]"
    example = lo if lo is not None else (hi if hi is not None else 0)
    raise fail(path, v, f"is not {want}", f"pass e.g. --config.{path}={example}")
  return int(v)


def number(config: Any, path: str, lo: float, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, fix: str = "") -> float:
  """A real number between lo and hi; open/closed ends as given."""
  v = get(config, path)
  ok = is_num(v) and math.isfinite(v)
  ok = ok and (v > lo if lo_open else v >= lo)
  if hi is not None:
    ok = ok and (v < hi if hi_open else v <= hi)
  if not ok:
    left = "(" if lo_open else "["
    right = "inf)" if hi is None else (f"{hi})" if hi_open else f"{hi}]")
    raise fail(path, v, f"is not a number in {left}{lo}, {right}",
               fix or f"pass a value in that range with --config.{path}=...")
  return float(v)


def divisors_near(n: int, target: int, count: int = 3) -> list[int]:
  divs = [d for d in range(1, n + 1) if n % d == 0]
  return sorted(sorted(divs, key=lambda d: (abs(d - target), d))[:count])
