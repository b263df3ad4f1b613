r"""python -m layerlock_jax.main --config=configs/vit4b.py --workdir=/tmp/vit4b
python -m layerlock_jax.main --config=configs/vit4b.py:mae --workdir=/tmp/vit4b_mae
python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=256 --accelerator=v5e

ViT-e/16 (1792 wide, 56 deep, MLP 15360, 16 heads; ~3.8B backbone parameters, the size of 4DS-e)
with the 4DS query decoder, so the encoder is 52 of 56 blocks. Unlike the other size configs the
default variant is layerlock (the headline run); mae is one suffix away. The recipe is the "e" row
of layerlock_jax/size_configs.py: 550K steps of 256 clips, FSDP over every device.

Mesh and memory: defaults chosen for >= 64 devices; the global batch of 256 needs a device count
dividing 256 (64, 128, 256). The AOT plan above says every v5e slice from 64 chips up fits with
room to spare (its output: docs/scaling.md).
"""
from layerlock_jax import size_configs

VARIANTS = ("layerlock", "mae")


def get_config(variant: str = "layerlock"):
  return size_configs.get_config("e", variant)
