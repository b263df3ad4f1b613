r"""python -m layerlock_jax.main --config=configs/vit_giant.py --workdir=/tmp/vit_giant
python -m layerlock_jax.main --config=configs/vit_giant.py:layerlock --workdir=/tmp/vit_giant_layerlock

ViT-g/16 (1408 wide, 40 deep, MLP 6144, 16 heads; ~1.0B backbone parameters) video MAE with the 4DS
query decoder (the last 4 blocks decode), so the encoder is 36 of 40 blocks.
Variants after ':': mae (default) | layerlock. The recipe (steps, batch, LR, mesh, freeze schedule)
is the "g" row of layerlock_jax/config/sizes.py; the run logs its freeze schedule first.
"""
from layerlock_jax.config import sizes as size_configs

VARIANTS = size_configs.VARIANTS


def get_config(variant: str = "mae"):
  return size_configs.get_config("g", variant)
