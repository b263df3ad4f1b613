"""The package's imports point one way: down the stack, never up.

Read from the source with `ast` (no module is imported), so the test is milliseconds and sees
imports inside functions too. The layers, bottom up: plan (pure Python) < models, data, masking <
optimizer, state, methods, flops, checkpoint < trainer < train < evaluation / commands / tools.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

import layerlock_jax

PACKAGE = pathlib.Path(layerlock_jax.__file__).parent


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, at any depth of the file (functions included)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      for alias in node.names:  # `from layerlock_jax import schedule` imports a module
        candidate = PACKAGE.parent / node.module.replace(".", "/") / alias.name
        if candidate.with_suffix(".py").exists() or candidate.is_dir():
          out.add(f"{node.module}.{alias.name}")
  return out


EDGES = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _under(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(sources, forbidden):
  return sorted(f"{mod} -> {dep}" for mod, deps in EDGES.items() if _under(mod, sources)
                for dep in deps if _under(dep, forbidden))


TOOLS = ("layerlock_jax.train", "layerlock_jax.evaluation", "experiments",
         "layerlock_jax.evaluate", "layerlock_jax.main")

# The user commands (python -m layerlock_jax.X) sit on top: nothing in the package imports them.
COMMANDS = ("layerlock_jax.main", "layerlock_jax.evaluate", "layerlock_jax.extract_features",
            "layerlock_jax.aot", "layerlock_jax.weights.__main__", "layerlock_jax.checkpoint.__main__")
LIBRARY = tuple(sorted({m for m in EDGES if m.startswith("layerlock_jax.")}
                       - {m for m in EDGES if _under(m, COMMANDS)}))

RULES = [
    pytest.param(LIBRARY, COMMANDS, id="library-x->commands"),
    # The methods' losses know nothing of the trainer or the loop that calls them.
    pytest.param(("layerlock_jax.methods",), ("layerlock_jax.trainer", "layerlock_jax.train",
                                              "layerlock_jax.train_step", "layerlock_jax.checkpoint"),
                 id="methods-x->trainer,train,checkpoint"),
    # The run's building blocks know nothing of the loop or the tools that use them.
    pytest.param(("layerlock_jax.models", "layerlock_jax.data", "layerlock_jax.optimizer",
                  "layerlock_jax.plan", "layerlock_jax.checkpoint", "layerlock_jax.config"), TOOLS,
                 id="building_blocks-x->tools"),
    # Models take their plan from plan, not from the loss or schedule modules that use them.
    pytest.param(("layerlock_jax.models",), ("layerlock_jax.optimizer", "layerlock_jax.methods",
                                             "layerlock_jax.state", "layerlock_jax.checkpoint"),
                 id="models-x->optimizer,methods,state,checkpoint"),
    # Blockwise SSL is a loss; what it plans (groups, budgets, names) lives in plan.
    pytest.param(("layerlock_jax.state", "layerlock_jax.optimizer", "layerlock_jax.flops"),
                 ("layerlock_jax.methods",), id="state,optimizer,flops-x->methods"),
    # A checkpoint reads shapes from the plan, not by building a model.
    # It restores into the abstract state it is handed and knows nothing of the trainer.
    pytest.param(("layerlock_jax.checkpoint",), ("layerlock_jax.models", "layerlock_jax.trainer"),
                 id="checkpoint-x->models,trainer"),
    # The plan is the bottom of the stack: pure Python, nothing of the package above it.
    # The paper-claims harness, the benchmarks and the config files sit outside the library and
    # use it; nothing in the library imports them.
    pytest.param(("layerlock_jax",), ("experiments", "bench", "configs"),
                 id="library-x->experiments,bench,configs"),
    # The loop is handed its evaluators (main.py builds them from the config); it imports none.
    pytest.param(("layerlock_jax.train", "layerlock_jax.train_step"),
                 ("layerlock_jax.evaluation", "layerlock_jax.evaluate", "experiments"),
                 id="train-x->evaluation"),
    pytest.param(("layerlock_jax.plan",), ("jax", "flax", "optax", "orbax", "numpy", "grain"),
                 id="plan-x->jax,numpy"),
    # Hardware facts (peaks, memory sizes, MFU) sit below everything that reports on a run.
    pytest.param(("layerlock_jax.hardware",), ("layerlock_jax",), id="hardware-x->package"),
    pytest.param(("layerlock_jax.config.validation", "layerlock_jax.config.defaults"),
                 ("jax", "flax", "optax", "orbax", "grain"), id="config-x->jax"),
]


@pytest.mark.parametrize("sources,forbidden", RULES)
def test_no_import_points_up(sources, forbidden):
  assert _violations(sources, forbidden) == []


def test_plan_imports_only_itself_from_the_package():
  deps = {dep for mod, deps in EDGES.items() if _under(mod, ("layerlock_jax.plan",))
          for dep in deps if _under(dep, ("layerlock_jax",))}
  assert {d for d in deps if not _under(d, ("layerlock_jax.plan",))} == set()


def test_the_scan_sees_known_edges():
  # Guards the parser itself: if it missed imports, every rule above would pass vacuously.
  assert "layerlock_jax.plan" in EDGES["layerlock_jax.optimizer"]
  assert "layerlock_jax.checkpoint.manager" in EDGES["layerlock_jax.train"]
  assert "jax" in EDGES["layerlock_jax.masking"]
  assert "layerlock_jax.models.vit" in EDGES["layerlock_jax.models.video_mae"]
  assert "layerlock_jax.hardware" in EDGES["layerlock_jax.aot"]


def test_plan_and_validation_load_without_jax():
  """What the static scan cannot see: the import of a whole chain (package __init__s included)."""
  code = ("import sys; import layerlock_jax.config.validation, layerlock_jax.plan; "
          "print(sorted(m for m in ('jax', 'flax', 'optax', 'numpy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=PACKAGE.parent)
  assert out.stdout.strip() == "[]"
