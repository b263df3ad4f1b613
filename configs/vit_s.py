r"""python -m layerlock_jax.main --config=configs/vit_s.py --workdir=/tmp/vit_s
python -m layerlock_jax.main --config=configs/vit_s.py:layerlock --workdir=/tmp/vit_s_layerlock

ViT-S/16 (384 wide, 12 deep, MLP 1536, 6 heads; ~22M backbone parameters) video MAE with the light
VideoMAE decoder (384 wide, 4 blocks), so all 12 blocks are encoder blocks.
Variants after ':': mae (default) | layerlock. The recipe (steps, batch, LR, mesh, freeze schedule)
is the "S" row of layerlock_jax/config/sizes.py; the run logs its freeze schedule first.
"""
from layerlock_jax.config import sizes as size_configs

VARIANTS = size_configs.VARIANTS


def get_config(variant: str = "mae"):
  return size_configs.get_config("S", variant)
