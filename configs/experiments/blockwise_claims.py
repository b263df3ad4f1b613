r"""The small video ViT behind the blockwise claim of `python -m experiments.reproduce`.

  python -m layerlock_jax.main --config=configs/experiments/blockwise_claims.py:concurrent \
      --config.seed=0 --workdir=/tmp/claims/blockwise_concurrent_s0

Built on configs/blockwise_tiny.py (drifting gratings at 48^2, tube masking at 0.9, 2x8x8
tubelets, one light decoder + pixel head per block), cut to 6 layers of width 64 in 3 blocks of 2
and to clips of 4 frames instead of 16 (72 tokens; two tubelets still carry the gratings' drift)
so that the three regimes, two seeds each, fit the reproduction's CPU budget. The text after ':' is the regime (concurrent |
sequential | e2e), optionally followed by `,quick` (CI-sized smoke run: 24 steps,
2 segments, 256 clips).
"""
import pathlib

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading

_blockwise_tiny = config_loading.load_module(
    pathlib.Path(__file__).parent.parent / "blockwise_tiny.py")

REGIMES = _blockwise_tiny.REGIMES


def get_config(variant: str = "concurrent"):
  regime, *mods = [p.strip() for p in variant.split(",")]
  config_defaults.check_variant(regime, REGIMES)
  if any(mod != "quick" for mod in mods):
    raise ValueError(f"unknown modifiers {mods} in {variant!r}; the only one is quick")
  c = _blockwise_tiny.get_config(regime)
  c.checkpoint_every = 0           # only the final state: these runs are minutes long
  c.model.depth = 6                # 3 segments of 2 layers (blockwise_tiny: 4 of 3)
  c.data.num_frames = 4
  c.blockwise.num_segments = 3
  if "quick" in mods:              # 2 segments of 3 layers: one sequential stage switch
    c.blockwise.num_segments = 2
    c.total_steps, c.log_every = 24, 4
    c.optimizer.warmup_steps = 4
    c.data.num_clips = 256
  return c
