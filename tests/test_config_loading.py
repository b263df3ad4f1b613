"""The config loader, dotted overrides, and the size table's derived LayerLock schedule."""
import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax.config import sizes as size_configs

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"


def test_loading_every_config_imports_no_jax_matplotlib_or_evaluation():
  """Config files are read by launchers, validators and planners: they must stay pure Python."""
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  from test_config_golden import CASES  # pylint: disable=g-import-not-at-top
  specs = [str(CONFIG_DIR / f) + ("" if v is None else f":{v}") for f, v in CASES]
  # Every config file, and every documented variant (some import more than their bare file).
  assert {s.split(":")[0] for s in specs} == {str(p) for p in CONFIG_DIR.rglob("*.py")}
  code = (
      "import json, sys\n"
      "from layerlock_jax.config import loading as config_loading\n"
      f"for spec in {specs!r}:\n"
      "  config_loading.load_config(spec)\n"
      "print(json.dumps(sorted(sys.modules)))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
  modules = json.loads(out.stdout.strip().splitlines()[-1])
  assert "layerlock_jax.config.defaults" in modules  # the check sees the loads' imports
  heavy = [m for m in modules if m.split(".")[0] in ("jax", "flax", "matplotlib", "numpy")
           or m.startswith("layerlock_jax.evaluation")]
  assert not heavy, heavy


def test_load_config_passes_the_text_after_the_first_colon(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text("import ml_collections\n"
                  "def get_config(arg='none'):\n"
                  "  return ml_collections.ConfigDict({'arg': arg, 'a': {'b': 1}})\n")
  assert config_loading.load_config(path).arg == "none"
  assert config_loading.load_config(f"{path}:x,y=1@2:z").arg == "x,y=1@2:z"
  with pytest.raises(FileNotFoundError, match="missing.py"):
    config_loading.load_config(tmp_path / "missing.py")


def test_override_sets_dotted_fields_and_refuses_unknown_ones():
  c = config_defaults.base_config()
  assert config_loading.override(c, {"model.depth": 4, "optimizer.lr": 1e-3,
                                     "model.patch_size": (2, 4, 4)}) is c
  assert (c.model.depth, c.optimizer.lr, tuple(c.model.patch_size)) == (4, 1e-3, (2, 4, 4))
  with pytest.raises((KeyError, AttributeError), match="detph"):
    config_loading.override(c, {"model.detph": 4})
  assert "detph" not in c.model and not c.is_locked  # nothing added, the lock state restored
  c.lock()
  config_loading.override(c, {"seed": 3})
  assert c.is_locked and c.seed == 3
  with pytest.raises(TypeError):
    config_loading.override(c, {"model.depth": "deep"})


def test_size_table_covers_every_size_and_size_config():
  assert set(size_configs.RECIPES) == set(config_defaults.VIT_SIZES)
  stems = {"S": "vit_s", "B": "vit_b", "L": "vit_l", "H": "vit_h", "g": "vit_giant",
           "G": "vit_gigantic", "e": "vit4b"}
  for size, stem in stems.items():
    c = config_loading.load_config(CONFIG_DIR / f"{stem}.py:mae")
    m = c.model
    assert (m.width, m.depth, m.mlp_dim, m.num_heads) == config_defaults.VIT_SIZES[size]
    assert c.total_steps == size_configs.RECIPES[size].total_steps


def test_layerlock_schedule_hand_derived():
  # ViT-G: 44 encoder blocks, 500K steps, the paper's 160K pixel steps. Cap floor(88 / 3) = 29;
  # the last freeze by 450K leaves (450K - 160K) / 28 = 10357 steps per freeze -> 10K, the
  # paper's own ViT-G interval.
  assert size_configs.layerlock_schedule(44, 500_000, 160_000) == {
      "max_frozen": 29, "interval": 10_000}
  # ViT-S: cap 8; (90K - 30K) / 7 = 8571 -> 8500.
  assert size_configs.layerlock_schedule(12, 100_000, 30_000) == {"max_frozen": 8,
                                                                   "interval": 8_500}
  with pytest.raises(ValueError, match="no room"):
    size_configs.layerlock_schedule(12, 10_000, 9_000)


def test_enable_layerlock_reads_the_encoder_depth_of_a_query_decoder():
  c = size_configs.get_config("L", "mae")   # 24 blocks, the last 4 decode: 20 encoder blocks
  c.total_steps = 100_000
  size_configs.enable_layerlock(c, pixel_steps=20_000, mini_warmup_steps=100)
  # cap floor(40 / 3) = 13; (90K - 20K) / 12 = 5833 -> 5500
  assert (c.layerlock.max_frozen, c.layerlock.interval) == (13, 5_500)
  assert c.layerlock.enabled and c.model.posemb == "rope"
  assert isinstance(c, ml_collections.ConfigDict)
