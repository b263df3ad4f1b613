r"""python -m layerlock_jax.main --config=configs/vit_h.py --workdir=/tmp/vit_h
python -m layerlock_jax.main --config=configs/vit_h.py:layerlock --workdir=/tmp/vit_h_layerlock

ViT-H/16 (1280 wide, 32 deep, MLP 5120, 16 heads; ~630M backbone parameters) video MAE with the 4DS
query decoder (the last 4 blocks decode), so the encoder is 28 of 32 blocks.
Variants after ':': mae (default) | layerlock. The recipe (steps, batch, LR, mesh, freeze schedule)
is the "H" row of layerlock_jax/config/sizes.py; the run logs its freeze schedule first.
"""
from layerlock_jax.config import sizes as size_configs

VARIANTS = size_configs.VARIANTS


def get_config(variant: str = "mae"):
  return size_configs.get_config("H", variant)
