"""Every file under configs/ builds, uses only schema fields, validates and documents its command.

Files are found by glob and loaded from their path (as ml_collections' config_flags does), so
configs added later are covered without touching this test. Variants are the `:NAME` suffixes the
docstring's own commands use. Extra checks pin the size configs shipped with the validation module.
"""
import math
import pathlib
import re

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax.config.validation import resolve_mesh_shape, validate
from layerlock_jax.plan import encoder_depth

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
# Also configs/experiments/ (the runs of `python -m experiments.reproduce`).
CONFIG_FILES = sorted(p for p in CONFIG_DIR.rglob("*.py") if not p.name.startswith("_"))


def _rel(path: pathlib.Path) -> str:
  """'configs/...' as the docstring commands spell the file."""
  return path.relative_to(CONFIG_DIR.parent).as_posix()

# The size configs: file stem -> VIT_SIZES key.
SIZE_CONFIGS = {"vit_s": "S", "vit_b": "B", "vit_l": "L", "vit_h": "H", "vit_giant": "g",
                "vit_gigantic": "G", "vit4b": "e"}


_load = config_loading.load_module


def _variant_args(path: pathlib.Path) -> list[tuple[str, ...]]:
  """() for the default plus every `--config=configs/<file>:VARIANT` the docstring advertises."""
  doc = _load(path).__doc__ or ""
  found = re.findall(rf"--config={re.escape(_rel(path))}:(\w+)", doc)
  return [()] + [(v,) for v in dict.fromkeys(found)]


CASES = [(p, args) for p in CONFIG_FILES for args in _variant_args(p)]
CASE_IDS = [p.stem + (f":{a[0]}" if a else "") for p, a in CASES]


def _flat_keys(cfg, prefix=""):
  keys = set()
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys |= _flat_keys(v, f"{prefix}{k}.")
    else:
      keys.add(prefix + k)
  return keys


def _backbone_params(width: int, depth: int, mlp: int) -> int:
  """Hand count of a ViT backbone: per block QKV + output projection (4 w^2 + 4 w), the MLP
  (2 w mlp + mlp + w) and two LayerNorms (4 w); plus the 2x16x16x3 tubelet embedding."""
  block = 4 * width**2 + 4 * width + 2 * width * mlp + mlp + width + 4 * width
  return depth * block + 2 * 16 * 16 * 3 * width + width


@pytest.mark.parametrize("stem,size", sorted(SIZE_CONFIGS.items()))
def test_size_config_docstring_states_its_parameter_count(stem, size):
  """Every size has its config file, and the "~N backbone parameters" it states fits its dims."""
  assert set(SIZE_CONFIGS.values()) == set(config_defaults.VIT_SIZES)
  doc = _load(CONFIG_DIR / f"{stem}.py").__doc__
  number, unit = re.search(r"~([\d.]+)([MB]) backbone parameters", doc).groups()
  stated = float(number) * {"M": 1e6, "B": 1e9}[unit]
  width, depth, mlp, _ = config_defaults.VIT_SIZES[size]
  assert abs(_backbone_params(width, depth, mlp) / stated - 1) < 0.02


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])
def test_docstring_names_its_own_command(path):
  doc = _load(path).__doc__
  assert doc, f"{path.name} has no docstring"
  assert re.search(rf"python -m layerlock_jax\.main --config={re.escape(_rel(path))}\b",
                   doc), f"{path.name}: docstring lacks its own run command"


@pytest.mark.parametrize("path,args", CASES, ids=CASE_IDS)
def test_builds_with_schema_fields_and_validates(path, args):
  config = _load(path).get_config(*args)
  assert isinstance(config, ml_collections.ConfigDict)
  # ml_collections only refuses unknown fields on a locked config; base_config() is not locked,
  # so a misspelled field would otherwise be silently added and silently ignored.
  extra = _flat_keys(config) - _flat_keys(config_defaults.base_config())
  assert not extra, f"{path.name}{args}: fields not in config_defaults: {sorted(extra)}"
  # Validity independent of the pod: one device, pure data parallelism.
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
  validate(config, num_devices=1)


@pytest.mark.parametrize("path,args", CASES, ids=CASE_IDS)
def test_shipped_mesh_validates(path, args):
  config = _load(path).get_config(*args)
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
  explicit = math.prod(s for s in sizes if s != -1)
  if -1 not in sizes:
    num_devices = explicit
  else:
    # Give the free axis 8 devices when the batch allows it, else 1.
    batch_par = math.prod(s for s in sizes[:2] if s != -1) * (8 if -1 in sizes[:2] else 1)
    num_devices = explicit * (8 if config.batch_size % batch_par == 0 else 1)
  validate(config, num_devices=num_devices)


@pytest.mark.parametrize("stem,size", sorted(SIZE_CONFIGS.items()))
def test_size_dims_match_table(stem, size):
  module = _load(CONFIG_DIR / f"{stem}.py")
  for args in [()] + [(v,) for v in module.VARIANTS]:
    m = module.get_config(*args).model
    assert (m.width, m.depth, m.mlp_dim, m.num_heads) == config_defaults.VIT_SIZES[size]


@pytest.mark.parametrize("stem", sorted(SIZE_CONFIGS))
def test_size_config_defaults(stem):
  module = _load(CONFIG_DIR / f"{stem}.py")
  assert set(module.VARIANTS) == {"mae", "layerlock"}
  mae = module.get_config("mae")
  assert not mae.layerlock.enabled and mae.model.posemb == "learned_3d"
  assert (mae.data.num_frames, mae.data.image_size) == (16, 224)
  assert tuple(mae.model.patch_size) == (2, 16, 16)
  assert (mae.masking.type, mae.masking.ratio) == ("random", 0.95)
  d = mae.model.decoder
  if SIZE_CONFIGS[stem] in ("S", "B"):
    assert (d.type, d.width, d.depth, d.num_heads, d.mlp_dim) == ("light", 384, 4, 6, 1536)
  else:
    assert (d.type, d.depth) == ("query", 4)
    assert mae.model.dtype == "bfloat16"
  with pytest.raises(ValueError, match="variant"):
    module.get_config("layerlok")


@pytest.mark.parametrize("stem", sorted(SIZE_CONFIGS))
def test_layerlock_schedule_scaled_to_depth(stem):
  c = _load(CONFIG_DIR / f"{stem}.py").get_config("layerlock")
  ll = c.layerlock
  assert ll.enabled and ll.target == "latent" and c.model.posemb == "rope"
  assert not ll.explicit and ll.jump == 1 and ll.first_freeze == "end_of_pixel"
  enc = encoder_depth(c)
  assert ll.max_frozen == math.floor(2 * enc / 3)
  last_freeze = ll.pixel_steps + (ll.max_frozen - 1) * ll.interval
  # Freezing ends shortly before 90% of training, leaving time to fit the final target.
  assert 0.85 * c.total_steps <= last_freeze <= 0.9 * c.total_steps, (last_freeze, c.total_steps)
  assert 100 <= ll.mini_warmup_steps < ll.interval


def test_vit4b_headline_defaults_target_large_pods():
  module = _load(CONFIG_DIR / "vit4b.py")
  c = module.get_config()
  assert c.layerlock.enabled, "vit4b.py defaults to LayerLock"
  assert not module.get_config("mae").layerlock.enabled
  assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor, c.mesh.preset) == (1, -1, 1, "fsdp")
  assert (c.model.remat_policy, c.model.dtype) == ("nothing_saveable", "bfloat16")
  assert c.batch_size == 256
  for devices in (64, 128, 256):
    # TPU hosts drive 4 chips each, so a pod slice has devices / 4 processes.
    validate(c, num_devices=devices, process_count=devices // 4)
  assert resolve_mesh_shape(c.mesh, 256) == (1, 256, 1)
  assert "64 devices" in module.__doc__ and "AOT plan" in module.__doc__


# ml_collections 1.1 loads config files with the deprecated importlib load_module(); not ours to fix.
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_variant_suffix_and_overrides_through_config_flags():
  """The docstring commands' `:variant` and `--config.x=` syntax work with the real flag parser."""
  path = CONFIG_DIR / "vit_l.py"
  argv = ["prog", f"--config={path}:layerlock", "--config.total_steps=1000",
          "--config.layerlock.pixel_steps=100"]
  fv = flags.FlagValues()
  # sys_argv: the override flags are read from it (sys.argv by default, i.e. pytest's own argv).
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  c = fv.config
  assert c.layerlock.enabled and c.total_steps == 1000 and c.layerlock.pixel_steps == 100
