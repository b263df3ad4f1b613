"""Configs sized for the benchmarks under bench/ on a 2-core CPU (ml_collections config files).

  --config=bench/cpu_configs.py:freeze   ViT-S encoder whose compute dominates the step, for the
                                         LayerLock freezing benchmark (bench/freeze_bench.py)
  --config=bench/cpu_configs.py:vit_s    configs/vit_s.py unchanged except clip and batch, for the
                                         PyTorch comparison (bench/torch_compare.py)
  --config=bench/cpu_configs.py:tiny     configs/tiny.py unchanged (the comparison's small config)

Why a special config for the freezing benchmark: freezing saves encoder compute only. With
VideoMAE's 2x16x16 tubelets at 64^2 or 112^2 and 90% masking, the encoder sees 13-39 tokens per
clip while the 4-block decoder sees all 128-392, so the decoder is ~75% of the FLOPs and the
largest possible saving (k = 8) is ~10% of the step - within the noise of a shared 2-core machine,
which makes a realized/theoretical ratio meaningless. 2x8x8 tubelets on 16x64x64 give 512 tokens
(51 visible at 90% masking) and a 1-block, 192-wide decoder leaves the encoder ~70% of the FLOPs:
freezing 8 of 12 blocks then saves ~34% by the FLOP model, large enough to measure.
"""
import os

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(name: str):
  """configs/ is a folder of config files, not a package: load one by path."""
  return config_loading.load_module(os.path.join(_ROOT, "configs", f"{name}.py"))


def freeze_config():
  c = config_defaults.vit_config("S")        # width 384, depth 12, MLP 1536, 6 heads
  c.batch_size = 8
  c.data.num_frames, c.data.image_size = 16, 64
  c.model.patch_size = (2, 8, 8)             # 8 x 8 x 8 = 512 tokens per clip
  c.masking.ratio = 0.9                      # 51 visible tokens
  c.model.remat_policy = "none"              # no recompute: FLOPs are exactly the model FLOPs
  dec = c.model.decoder
  dec.type, dec.width, dec.depth, dec.num_heads, dec.mlp_dim = "light", 192, 1, 3, 768
  c.objective.pixel_norm = "patch"
  c.layerlock.enabled = True
  c.layerlock.target = "pixel"               # the "is freezing free" comparison: same loss at all k
  c.mesh.preset = "data_parallel"
  return c


def vit_s_config():
  c = load_config_file("vit_s").get_config()  # the real ViT-S config, remat policy included
  c.batch_size = 4
  c.data.num_frames, c.data.image_size = 16, 112  # 8 x 7 x 7 = 392 tokens; 224^2 is ~40 s/step
  return c


def get_config(name: str = "freeze", remat: str = "config", overrides=()):
  """A bench config; remat "config" keeps its own policy; overrides: ["a.b=value", ...], each
  value converted to the field's type (an unknown field is a KeyError naming it)."""
  configs = {"freeze": freeze_config, "vit_s": vit_s_config,
             "tiny": lambda: load_config_file("tiny").get_config()}
  if name not in configs:
    raise ValueError(f"unknown bench config {name!r}; choose from {sorted(configs)}")
  config = configs[name]()
  if remat != "config":
    config.model.remat_policy = remat
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"{item!r} is not key=value")
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    old = node[leaf]  # a KeyError names an unknown field
    node[leaf] = type(old)(value) if not isinstance(old, bool) else value.lower() == "true"
  return config
