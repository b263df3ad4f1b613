r"""python -m layerlock_jax.main --config=configs/vit_l.py --workdir=/tmp/vit_l
python -m layerlock_jax.main --config=configs/vit_l.py:layerlock --workdir=/tmp/vit_l_layerlock

ViT-L/16 (1024 wide, 24 deep, MLP 4096, 16 heads; ~303M backbone parameters) video MAE with the 4DS
query decoder (the last 4 blocks decode), so the encoder is 20 of 24 blocks.
Variants after ':': mae (default) | layerlock. The recipe (steps, batch, LR, mesh, freeze schedule)
is the "L" row of layerlock_jax/config/sizes.py; the run logs its freeze schedule first.
"""
from layerlock_jax.config import sizes as size_configs

VARIANTS = size_configs.VARIANTS


def get_config(variant: str = "mae"):
  return size_configs.get_config("L", variant)
