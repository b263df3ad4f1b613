r"""python -m layerlock_jax.main --config=configs/vit_gigantic.py --workdir=/tmp/vit_gigantic
python -m layerlock_jax.main --config=configs/vit_gigantic.py:layerlock --workdir=/tmp/vit_gigantic_layerlock

ViT-G/16 (1664 wide, 48 deep, MLP 8192, 16 heads; ~1.85B backbone parameters) video MAE with the 4DS
query decoder (the last 4 blocks decode), so the encoder is 44 of 48 blocks.
Variants after ':': mae (default) | layerlock. The recipe (steps, batch, LR, mesh, freeze schedule)
is the "G" row of layerlock_jax/config/sizes.py; the run logs its freeze schedule first.
"""
from layerlock_jax.config import sizes as size_configs

VARIANTS = size_configs.VARIANTS


def get_config(variant: str = "mae"):
  return size_configs.get_config("G", variant)
