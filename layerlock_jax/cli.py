"""Running a module as a program: absl's `app.run`, except that asking for help exits 0 and a
misspelt `--config.…` override is one line.

absl's --help / --helpshort / --helpfull flags print the usage and then exit with status 1,
which scripts and CI read as a failure. An override of a field the config does not have
(`--config.data.layuot=x`) makes ml_collections raise a KeyError -> AttributeError chain while
the flags are parsed; here it becomes "Config error: config.data.layuot: no such field; closest:
config.data.layout" and exit status 2, the status of every other bad config. Every program of
the package that takes a --config starts through `run`.
"""
from __future__ import annotations

import difflib
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "--helpfull", "--helpxml")


def run(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  asked = any(a.split("=")[0] in HELP_ARGS for a in argv[1:])
  try:
    app.run(main, argv=argv, flags_parser=_parse_flags)
  except SystemExit as e:
    if asked and e.code == 1:  # the usage was printed: that is success
      sys.exit(0)
    raise


def _parse_flags(argv: Sequence[str]):
  """absl's flag parsing, with an unknown config field reported as one line (exit status 2)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    line = unknown_override(argv)
    if line is None:
      raise
    print(line, file=sys.stderr)
    sys.exit(2)


def _config_flags(argv: Sequence[str]) -> dict[str, str]:
  """{flag name: its value} of the config-file flags given in `argv` (--config=FILE[:arg])."""
  out = {}
  for i, arg in enumerate(argv[1:], 1):
    if not arg.startswith("--") or "." in arg.split("=", 1)[0]:
      continue
    name, _, value = arg[2:].partition("=")
    if not value and i + 1 < len(argv):
      value = argv[i + 1]
    flag = flags.FLAGS[name] if name in flags.FLAGS else None
    if flag is not None and type(flag).__name__ == "_ConfigFlag":
      out[name] = value
  return out


def unknown_override(argv: Sequence[str]) -> str | None:
  """The one-line error for the first `--NAME.path=value` override in `argv` whose path the
  config of --NAME lacks: the field and the closest existing names. None when every override's
  path exists (the error was something else)."""
  for name, value in _config_flags(argv).items():
    try:
      config = flags.FLAGS[name].parser.parse(value)
    except Exception:  # pylint: disable=broad-except  (the file itself is broken: not ours)
      return None
    for arg in argv[1:]:
      if not arg.startswith(f"--{name}."):
        continue
      path = arg[len(name) + 3:].split("=", 1)[0].split(".")
      node, where = config, name
      for key in path:
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if key not in keys:
          close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
          hint = (", ".join(f"{where}.{c}" for c in close) if close
                  else f"none near it (fields of {where}: {', '.join(sorted(keys)[:12])})")
          return f"Config error: {where}.{key}: no such field; closest: {hint}"
        node, where = node[key], f"{where}.{key}"
  return None
