"""The commands in the docs name modules, scripts, configs, fields and flags that exist.

What is checked: every fenced block whose info string is exactly `bash` in README.md, docs/*.md and
bench/README.md. The convention for the docs:

  ```bash   a command a user can paste and run (paths of their own data, such as /path/to/videos,
            are placeholders and are not checked to exist). Checked here.
  ```text   (or ```console, ```python, a plain ```): illustrative - output, `$ ` prompts with the
            error they print, config snippets, layouts. Never checked.

Each command (lines joined at a trailing backslash, `#` comments dropped, split at `&&`, `;` and
`|`) is checked cheaply, without running it:
- `python -m M` with M under layerlock_jax/, experiments/ or bench/: the module's file exists.
- `python FILE.py`, `bash FILE.sh`, `launch/X.sh`, `sbatch FILE`: the file exists.
- `--config=FILE[:ARG]` (of a program with an absl config-file flag): FILE exists and loads with
  the project's config loader (`get_config(ARG)`).
- `--config.a.b=V`: `a.b` is a field of the command's `--config` (a command with overrides and no
  `--config` fails the test).
- every other `--flag`: a flag the command defines. Flags are read from the source of the command's
  module and of the repository modules it imports (absl `DEFINE_*` and `DEFINE_config_file`,
  argparse `add_argument`; `--noNAME` for absl booleans) plus absl's own (`--help`, `--flagfile`,
  ...).
  `bash bench/X.sh` forwards its arguments to bench/X.py; the launch scripts (launch/*.sh,
  launch/*.sbatch) forward theirs to `python -m layerlock_jax.main`.
- `pip install`: `-c`/`-r` files exist and `.[extra]` names an extra of setup.py; `pytest`: paths
  under tests/ exist.
Other programs (tensorboard, export, sbatch's own options, ...) are not checked. A second test reads
`--helpfull` of main, aot and data.convert in subprocesses, so the static flag reader cannot drift
from what absl really defines; a third checks that relative links in the docs point at files and
headings that exist.
"""
from __future__ import annotations

import ast
import functools
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("layerlock_jax", "experiments", "bench")
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "logtostderr",
              "alsologtostderr", "verbosity", "v", "log_dir", "only_check_args", "stderrthreshold"}
MAIN = "layerlock_jax/main.py"


def bash_commands(path: pathlib.Path):
  """(line number, command string) of every command in the file's ```bash blocks."""
  lines = path.read_text().splitlines()
  out, in_bash, in_other, pending, start = [], False, False, "", 0
  for i, line in enumerate(lines, 1):
    stripped = line.strip()
    if stripped.startswith("```"):
      if in_bash or in_other:
        in_bash = in_other = False
      elif stripped == "```bash":
        in_bash = True
      else:
        in_other = True
      continue
    if not in_bash:
      continue
    if not pending:
      start = i
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    command, pending = pending + line, ""
    if command.strip():
      out.append((start, command))
  return out


def split_command(command: str) -> list[list[str]]:
  lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  lexer.commenters = "#"
  parts, current = [], []
  for token in lexer:
    if token and set(token) <= set(";&|"):
      if current:
        parts.append(current)
      current = []
    else:
      current.append(token)
  if current:
    parts.append(current)
  return parts


def _module_file(name: str, near: pathlib.Path | None = None) -> pathlib.Path | None:
  rel = pathlib.Path(*name.split("."))
  bases = [ROOT] + ([near] if near is not None else [])
  for base in bases:
    for cand in (base / rel.with_suffix(".py"), base / rel / "__main__.py",
                 base / rel / "__init__.py"):
      if cand.is_file():
        return cand
  return None


def _imported_files(path: pathlib.Path, tree: ast.AST) -> list[pathlib.Path]:
  files = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      f = _module_file(name, near=path.parent)
      if f is not None and f != path and (ROOT in f.parents):
        files.append(f)
  return files


def _defined_flags(tree: ast.AST) -> set[str]:
  flags = set()
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))):
      continue
    fname = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
    if fname.startswith("DEFINE_"):
      if fname == "DEFINE_config_file":
        flags.add("config=FILE")  # marks --config as a config file, not a plain flag
      name = node.args[0] if node.args else next(
          (k.value for k in node.keywords if k.arg == "name"), None)
      if isinstance(name, ast.Constant) and isinstance(name.value, str):
        flags.add(name.value)
        if fname in ("DEFINE_bool", "DEFINE_boolean"):
          flags.add("no" + name.value)
    elif fname == "add_argument":
      for a in node.args:
        if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--"):
          flags.add(a.value[2:])
  return flags


@functools.lru_cache(maxsize=None)
def command_flags(rel: str) -> frozenset[str]:
  """Flags defined by the program at ROOT/rel and the repository modules it imports directly."""
  path = ROOT / rel
  tree = ast.parse(path.read_text())
  flags = set(_defined_flags(tree))
  for f in _imported_files(path, tree):
    flags |= _defined_flags(ast.parse(f.read_text()))
  return frozenset(flags | ABSL_FLAGS)


@functools.lru_cache(maxsize=None)
def load_config(spec: str):
  try:
    from layerlock_jax.config import loading  # pylint: disable=g-import-not-at-top
  except ImportError:
    from layerlock_jax import config_loading as loading  # pylint: disable=g-import-not-at-top
  return loading.load_config(spec)


def _check_override(config, dotted: str) -> str | None:
  node = config
  for i, key in enumerate(dotted.split(".")):
    try:
      keys = list(node.keys())
    except AttributeError:
      return f"--config.{dotted}: {'.'.join(dotted.split('.')[:i])} is not a config group"
    if key not in keys:
      return f"--config.{dotted}: no field {key!r} (has {sorted(keys)})"
    node = node[key]
  return None


def check_args(program: str | None, args: list[str]) -> list[str]:
  """Problems with the `--` arguments of the program at ROOT/program (None: no flag check)."""
  problems, config, overrides = [], None, []
  for arg in args:
    if not arg.startswith("--") or arg == "--":
      continue
    name, _, value = arg[2:].partition("=")
    if name == "config" and (program is None or "config=FILE" in command_flags(program)):
      file = value.split(":", 1)[0]
      if not (ROOT / file).is_file():
        problems.append(f"--config={value}: no file {file}")
        continue
      try:
        config = load_config(value)
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f"--config={value} does not load: {type(e).__name__}: {e}")
    elif name.startswith("config."):
      overrides.append(name[len("config."):])
    elif program is not None and name not in command_flags(program):
      problems.append(f"{program} defines no flag --{name}")
  if overrides:
    if config is None and not any(p.startswith("--config=") for p in problems):
      problems.append(f"overrides {overrides} without a --config to check them against")
    elif config is not None:
      problems += [p for p in (_check_override(config, o) for o in overrides) if p]
  return problems


def _extras() -> set[str]:
  text = (ROOT / "setup.py").read_text()
  block = text[text.index("extras_require"):]
  return set(re.findall(r'"([\w-]+)":\s*\[', block[:block.index("}")]))


def check_command(tokens: list[str]) -> list[str]:
  """Problems with one simple command (a list of shell words)."""
  while tokens and re.match(r"^\w+=", tokens[0]):  # VAR=value prefixes
    tokens = tokens[1:]
  if not tokens:
    return []
  prog, rest = tokens[0], tokens[1:]
  base = os.path.basename(prog)
  if re.fullmatch(r"python[\d.]*", base):
    if rest[:1] == ["-m"]:
      module = rest[1]
      if module.split(".")[0] not in PACKAGES:
        return []  # venv, pip, ... : not ours
      f = _module_file(module)
      if f is None:
        return [f"no module {module} in the repository"]
      return check_args(str(f.relative_to(ROOT)), rest[2:])
    script = rest[0] if rest else ""
    if not (ROOT / script).is_file():
      return [f"no script {script}"]
    return check_args(script, rest[1:])
  if base == "bash" and rest:
    script = rest[0]
    if not (ROOT / script).is_file():
      return [f"no script {script}"]
    forward = pathlib.Path(script).with_suffix(".py")
    return check_args(str(forward) if (ROOT / forward).is_file() else None, rest[1:])
  if base == "sbatch":
    files = [i for i, t in enumerate(rest) if t.startswith("launch/")]
    if not files:
      return [f"sbatch without a launch/ script: {tokens}"]
    return _check_launch(rest[files[0]], rest[files[0] + 1:])
  if prog.startswith("launch/"):
    return _check_launch(prog, rest)
  if base == "pip" and rest[:1] == ["install"]:
    problems = []
    for i, t in enumerate(rest):
      if t in ("-c", "-r") and not (ROOT / rest[i + 1]).is_file():
        problems.append(f"pip: no file {rest[i + 1]}")
      m = re.fullmatch(r"\.\[([\w,-]+)\]", t)
      if m:
        problems += [f"pip: no extra {x!r} in setup.py" for x in m.group(1).split(",")
                     if x not in _extras()]
    return problems
  if base == "pytest":
    return [f"pytest: no path {t}" for t in rest
            if t.startswith("tests") and not (ROOT / t.split("::")[0]).exists()]
  return []


def _check_launch(script: str, args: list[str]) -> list[str]:
  if not (ROOT / script).is_file():
    return [f"no launch script {script}"]
  if "--" in args:
    args = args[args.index("--") + 1:]
  return check_args(MAIN, args)


def _cases():
  for doc in DOCS:
    for line, command in bash_commands(doc):
      yield pytest.param(command, id=f"{doc.relative_to(ROOT)}:{line}")


def test_docs_have_bash_blocks():
  assert all(d.is_file() for d in DOCS)
  counts = {str(d.relative_to(ROOT)): len(bash_commands(d)) for d in DOCS}
  assert all(counts.values()), counts  # every page shows at least one command
  assert (ROOT / "README.md").read_text().count("\n") <= 300
  assert (ROOT / "bench" / "README.md").read_text().count("\n") <= 300


@pytest.mark.parametrize("command", list(_cases()))
def test_doc_command_names_what_exists(command):
  problems = []
  for tokens in split_command(command):
    problems += check_command(tokens)
  assert not problems, f"{command}\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("module,expect", [
    ("layerlock_jax.main", {"config", "workdir"}),
    ("layerlock_jax.aot", {"config", "num_devices", "accelerator"}),
    ("layerlock_jax.data.convert", {"input", "output", "short_side"}),
])  # the absl commands whose --helpfull is cheap (the others import JAX first: ~12 s each)
def test_static_flag_reader_matches_absl(module, expect):
  """The flags read from a command's source are flags absl really defines for it."""
  out = subprocess.run([sys.executable, "-m", module, "--helpfull"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  text = out.stdout + out.stderr
  listed = set(re.findall(r"^\s+--(?:\[no\])?([\w.]+)", text, re.M))
  program = str(_module_file(module).relative_to(ROOT))
  static = command_flags(program) - ABSL_FLAGS - {"config=FILE"}
  assert expect <= static and expect <= listed, (expect, static, listed)
  missing = {f for f in static if not (f.startswith("no") and f[2:] in static) and f not in listed}
  assert not missing, (missing, text[-2000:])


def _anchors(md: pathlib.Path) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
  heads = re.findall(r"^#+\s+(.*)$", md.read_text(), re.M)
  return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_relative_links_point_at_files_and_headings():
  bad = []
  for doc in DOCS:
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
      if "://" in target or target.startswith("mailto:"):
        continue
      path = (doc.parent / target) if target else doc
      if not path.exists():
        bad.append(f"{doc.relative_to(ROOT)} -> {target}")
      elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
        bad.append(f"{doc.relative_to(ROOT)} -> {target}#{anchor}: no such heading")
  assert not bad, bad
