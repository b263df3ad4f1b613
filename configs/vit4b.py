r"""python -m layerlock_jax.main --config=configs/vit4b.py --workdir=/tmp/vit4b
python -m layerlock_jax.main --config=configs/vit4b.py:mae --workdir=/tmp/vit4b_mae

ViT-e/16 (1792 wide, 56 deep, MLP 15360, 16 heads; ~3.8B backbone parameters, the size of 4DS-e)
pretrained with LayerLock on 16 frames x 224^2 with 2x16x16 tubelets (8x14x14 = 1568 tokens) and 95%
random masking. Decoder: the 4DS query decoder - position-only query tokens join the sequence before
the last 4 backbone blocks, which act as the decoder - so the encoder is 52 of 56 blocks.

The text after ':' in --config picks the variant; unlike the other size configs the default here is
"layerlock" (the headline run), and plain MAE is one suffix away:
  layerlock  LayerLock (default): 3D RoPE after the first norm; 160K pixel-only steps, then one more
             encoder block frozen every 10K steps (up to 34 = floor(2/3 x 52)), the target switching
             to the newest frozen block's output with a 500-step LR mini-warmup at each switch.
  mae        plain video MAE: normalised-pixel target, learned 3D position embedding (4DS).

Schedule: 550K steps of 256 clips (140.8M clips seen, about one pass over the ~170M 4DS clips [S]),
AdamW with peak LR 1.5e-4 = 1.5e-4 x batch/256 (the MAE scaling rule [R]), 20K warmup, cosine decay.

Mesh and memory: defaults chosen for >= 64 devices; see the AOT plan. They target 256 devices of
16 GiB: ZeRO-3 style FSDP over every device (mesh.data=1, mesh.fsdp=-1, preset "fsdp") so the
float32 parameters, gradients and Adam moments (~61 GB) are split 256 ways, bfloat16 compute, and
remat "nothing_saveable" so only block inputs are kept for the backward pass. The global batch of
256 needs a device count dividing 256 (64, 128, 256). On a multi-slice pod put the slow (DCN) axis
first, e.g. --config.mesh.data=2. The AOT plan of these defaults (XLA:CPU estimate, 3.82B parameters
in total with the decoder queries and heads):
  python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=256 --accelerator=v5e
gives a peak of 1.5 GiB per device on 256 devices (stage k=1) and 5.5 GiB on 64 (k=0): every v5e
slice from 64 chips (16 GiB each) up fits with room to spare.

The data source stays the embedded Moving-MNIST set so the commands run anywhere; for real
pretraining add e.g. --config.data.source=video_folder --config.data.path=/data/videos
(or data.source=array_record / tfds). Any field can be overridden with --config.<field>=value.
"""
from layerlock_jax import config_defaults

VARIANTS = ("layerlock", "mae")


def get_config(variant: str = "layerlock"):
  """The ViT-e (~4B) config; `variant` is "layerlock" (default) or "mae" (see the docstring)."""
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.vit_config("e")
  # The 4DS decoder: query tokens enter before the last 4 backbone blocks, which decode.
  c.model.decoder.type = "query"
  c.model.decoder.depth = 4
  c.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer state stay float32
  c.model.remat_policy = "nothing_saveable"  # activations of 56 blocks do not fit otherwise

  c.total_steps = 550_000
  c.batch_size = 256
  c.optimizer.lr = 1.5e-4  # 1.5e-4 * 256 / 256
  c.optimizer.warmup_steps = 20_000
  c.checkpoint_every = 5_000
  c.keep_every = 50_000  # permanent snapshots for depth-wise analysis of the frozen prefix
  # FSDP over all devices: 3.8B params x 16 B (params + 2 Adam moments + grads) cannot replicate.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.mesh.preset = "fsdp"

  if variant == "layerlock":
    # Encoder depth 52 (56 blocks minus the 4 decoder blocks); cap = 2/3 * 52 -> 34 frozen
    # blocks, one per event (jump 1), so 34 freeze events. Keeping the paper's ViT-G pacing
    # (160K pixel steps, 10K interval [S]) the last freeze lands at
    #   pixel_steps + (34 - 1) * interval = 160K + 33 * 10K = 490K = 89.1% of 550K,
    # which is why total_steps is 550K: the last ~10% of training adapts to the final target.
    config_defaults.enable_layerlock(c, pixel_steps=160_000, interval=10_000,
                                     max_frozen=34, mini_warmup_steps=500)
  return c
