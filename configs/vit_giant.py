r"""python -m layerlock_jax.main --config=configs/vit_giant.py --workdir=/tmp/vit_giant
python -m layerlock_jax.main --config=configs/vit_giant.py:layerlock --workdir=/tmp/vit_giant_layerlock

ViT-g/16 (1408 wide, 40 deep, MLP 6144, 16 heads; ~1.0B backbone parameters) video pretraining on
16 frames x 224^2 with 2x16x16 tubelets (8x14x14 = 1568 tokens) and 95% random masking.
Decoder: the 4DS query decoder - position-only query tokens join the sequence before the
last 4 backbone blocks, which act as the decoder - so the encoder is 36 of 40 blocks.

The text after ':' in --config picks the variant (default "mae"):
  mae        plain video MAE: normalised-pixel target, learned 3D position embedding (4DS).
  layerlock  LayerLock: 3D RoPE after the first norm; 150K pixel-only steps, then one more encoder
             block frozen every 11K steps (up to 24 = floor(2/3 x 36)), the target switching to
             the newest frozen block's output with a 500-step LR mini-warmup at each switch.

Schedule: 450K steps of 2048 clips (921.6M clips seen), AdamW with peak LR 1.2e-3 = 1.5e-4 x
batch/256 (the MAE scaling rule; the papers give no LR [R]), 20K warmup steps, cosine decay.

Mesh: ZeRO-3 style FSDP over every device (mesh.data=1, mesh.fsdp=-1): float32 parameters,
gradients and Adam moments of a ~1.0B model do not fit replicated on 16 GiB devices. On a
multi-slice pod put the slow (DCN) axis first, e.g. --config.mesh.data=2.

The data source stays the embedded Moving-MNIST set so the commands run anywhere; for real
pretraining add e.g. --config.data.source=video_folder --config.data.path=/data/videos
(or data.source=array_record / tfds). Any field can be overridden with --config.<field>=value.
"""
from layerlock_jax import config_defaults

VARIANTS = ("mae", "layerlock")


def get_config(variant: str = "mae"):
  """The ViT-g/16 config; `variant` is "mae" or "layerlock" (see the module docstring)."""
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.vit_config("g")
  # The 4DS decoder: query tokens enter before the last 4 backbone blocks, which decode.
  c.model.decoder.type = "query"
  c.model.decoder.depth = 4
  c.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer state stay float32

  c.total_steps = 450_000
  c.batch_size = 2048
  c.optimizer.lr = 1.2e-3  # 1.5e-4 * 2048 / 256
  c.optimizer.warmup_steps = 20_000
  c.checkpoint_every = 5_000
  c.keep_every = 50_000  # permanent snapshots for depth-wise analysis of the frozen prefix
  # FSDP over all devices: parameters + Adam state (16 B/param) are too big to replicate.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.mesh.preset = "fsdp"

  if variant == "layerlock":
    # Encoder depth 36 (40 blocks minus the 4 decoder blocks); cap = 2/3 * 36 -> 24 frozen
    # blocks, one per event (jump 1), so 24 freeze events. With the first freeze at the end of
    # the pixel stage the last one lands at
    #   pixel_steps + (24 - 1) * interval = 150K + 23 * 11K = 403K = 89.6% of 450K,
    # leaving the last ~10% of training to adapt to the final target. [I: the papers give the
    # schedule only for ViT-G (160K pixel steps, 10K interval); other sizes are scaled to fit.]
    config_defaults.enable_layerlock(c, pixel_steps=150_000, interval=11_000,
                                     max_frozen=24, mini_warmup_steps=500)
  return c
