"""Every program of the package answers --help with exit status 0 and its usage on stdout."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _programs():
  """Modules that run as programs: those with a `__main__` guard in their code."""
  out = []
  for root, _, files in [w for top in ("layerlock_jax", "experiments")
                         for w in os.walk(os.path.join(REPO, top))]:
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(root, f)
        with open(path) as fh:
          if any(line.startswith("if __name__ == \"__main__\":") for line in fh):
            rel = os.path.relpath(path, REPO)[:-3]
            out.append(rel.replace(os.sep, "."))
  return sorted(out)


PROGRAMS = _programs()


def test_programs_found():
  assert {"layerlock_jax.main", "layerlock_jax.data.convert",
          "experiments.reproduce"} <= set(PROGRAMS)


# One interpreter imports the heavy dependencies once, then forks a child per program that runs
# it as __main__ with --help (flags are process-global, so each program needs its own process;
# forking after the imports turns ~9 x 4 s of start-up into one). It prints one JSON line per
# program: exit status and the start of its stdout.
_DRIVER = r"""
import io, json, os, runpy, sys, tempfile
import jax, flax, optax, orbax.checkpoint, grain, ml_collections  # the slow imports, once
import layerlock_jax.train
results = {}
for module in sys.argv[1:]:
  out = tempfile.TemporaryFile()
  pid = os.fork()
  if pid == 0:
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.argv = [module, "--help"]
    code = 0
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
      import traceback; traceback.print_exc(); code = 99
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)
  _, status = os.waitpid(pid, 0)
  out.seek(0)
  results[module] = (os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps():
  r = subprocess.run([sys.executable, "-c", _DRIVER, *PROGRAMS], cwd=REPO, capture_output=True,
                     text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", PROGRAMS)
def test_help_exits_zero(helps, module):
  code, text = helps[module]
  assert code == 0, (module, code, text[-2000:])
  # The usage names the program or lists its flags.
  program = module.removesuffix(".__main__")  # a package's __main__ runs as `-m package`
  assert "python -m " + program in text or "flags:" in text, (module, text[:500])
