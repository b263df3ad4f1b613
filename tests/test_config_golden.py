"""Every config file (and every documented variant) resolves to exactly the recorded config.

tests/golden/configs/ holds `config.to_json_best_effort(sort_keys=True, indent=1)` of each case,
written from the config files as they were before they were rebuilt from a size table. Refactoring a
config file must leave its resolved config byte-identical; a deliberate change to a config is made
by rewriting the golden files (`python tests/test_config_golden.py --write`) and reviewing the diff.
"""
import pathlib
import re
import sys

import pytest

from layerlock_jax.config import loading as config_loading

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / "golden" / "configs"

_SIZES = ("vit_s", "vit_b", "vit_l", "vit_h", "vit_giant", "vit_gigantic", "vit4b")
_REGIMES = ("concurrent", "sequential", "e2e")
_ARMS = ("mae", "freeze_pixel", "layerlock", "naive_latent", "layerlock_no_miniwarmup",
         "mae_learned_posemb")

# Config file (relative to configs/) -> its config strings; None is the bare file (no ':').
VARIANTS = {
    "tiny.py": [None],
    "layerlock_tiny.py": [None],
    "vjepa_tiny.py": [None, "layerlock"],
    "vjepa_l.py": [None, "layerlock"],
    **{f"{name}.py": [None, *_REGIMES]
       for name in ("blockwise_tiny", "blockwise_deit_tiny", "blockwise_deit_small")},
    **{f"{name}.py": [None, "mae", "layerlock"] for name in _SIZES},
    "experiments/blockwise_claims.py": [None, *_REGIMES, *(f"{r},quick" for r in _REGIMES)],
    "experiments/vjepa_claims.py": [None, "vjepa", "vjepa_layerlock", "vjepa,quick",
                                    "vjepa_layerlock,quick"],
    "experiments/layerlock_claims.py": [
        None, *_ARMS, *(f"{a},quick" for a in _ARMS),
        "mae,freeze=2@150", "mae,freeze=1@10,quick", "mae,data=moving_mnist",
        "layerlock,data=camera_motion", "mae,data=camera_motion,quick",
        "freeze_pixel,trigger=convergence", "layerlock,trigger=convergence,quick",
        "layerlock,center", "layerlock,center,quick", "mae,steps=900", "freeze_pixel,steps=900"],
}
CASES = [(file, v) for file, variants in VARIANTS.items() for v in variants]


def case_id(file: str, variant: str | None) -> str:
  stem = file.removesuffix(".py").replace("/", "__")
  return stem if variant is None else f"{stem}@{re.sub(r'[^A-Za-z0-9_]', '_', variant)}"


def resolve(file: str, variant: str | None) -> str:
  spec = str(CONFIG_DIR / file) + ("" if variant is None else f":{variant}")
  return config_loading.load_config(spec).to_json_best_effort(sort_keys=True, indent=1) + "\n"


def test_every_config_file_has_cases():
  files = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.py")
           if not p.name.startswith("_")}
  assert files == set(VARIANTS), "add new config files (and their variants) to VARIANTS"


def test_golden_files_match_cases():
  """A golden file without a case would silently stop being checked."""
  assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == {case_id(*c) for c in CASES}


@pytest.mark.parametrize("file,variant", CASES, ids=[case_id(*c) for c in CASES])
def test_resolves_to_golden(file, variant):
  golden = (GOLDEN_DIR / f"{case_id(file, variant)}.json").read_text()
  assert resolve(file, variant) == golden


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: python tests/test_config_golden.py --write   (rewrites tests/golden/configs)")
  GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
  for old in GOLDEN_DIR.glob("*.json"):
    old.unlink()
  for c in CASES:
    (GOLDEN_DIR / f"{case_id(*c)}.json").write_text(resolve(*c))
  print(f"wrote {len(CASES)} files to {GOLDEN_DIR}")
