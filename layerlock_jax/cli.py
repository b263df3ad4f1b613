"""Running a module as a program: absl's `app.run`, except that asking for help exits 0.

absl's --help / --helpshort / --helpfull flags print the usage and then exit with status 1,
which scripts and CI read as a failure. Every program of the package starts through `run`.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app

HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "--helpfull", "--helpxml")


def run(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  asked = any(a.split("=")[0] in HELP_ARGS for a in argv[1:])
  try:
    app.run(main, argv=argv)
  except SystemExit as e:
    if asked and e.code == 1:  # the usage was printed: that is success
      sys.exit(0)
    raise
