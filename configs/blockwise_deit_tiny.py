r"""Blockwise SSL on a video DeiT-Tiny, the paper's smaller backbone (arXiv 2601.09040).

  python -m layerlock_jax.main --config=configs/blockwise_deit_tiny.py --workdir=/tmp/bw_deit_tiny
  python -m layerlock_jax.main --config=configs/blockwise_deit_tiny.py:sequential --workdir=/tmp/bws
  python -m layerlock_jax.main --config=configs/blockwise_deit_tiny.py:e2e --workdir=/tmp/bw_e2e

DeiT-Tiny (192 wide, 12 deep, 3 heads, MLP 768) on 16 x 128^2 clips with 2x8x8 tubelets
(8x16x16 = 2048 tokens), tube masking at 0.9 (208 visible tokens), cut into 4 segments of 3 layers
(--config.blockwise.num_segments=6 for 6 segments of 2; --config.blockwise.boundaries='(2, 6, 12)'
for uneven ones). The text after ':' picks the regime (default concurrent): concurrent |
sequential | e2e, the paper's "Simultaneous BWSSL", "Sequential BWSSL" and "e2e_attached".

Per-block decoders [I: the paper does not give their size]: VideoMAE's light decoder at half the
encoder width (96, 3 heads, MLP 384) but 2 blocks instead of 4, since there are 4-6 of them, each
decoding all 2048 positions. Optimisation [I]: VideoMAE's recipe (AdamW 0.9/0.95, weight decay
0.05, LR 1.5e-4 x batch/256, 5% warmup, cosine, no gradient clipping; a global clip would also be
the one channel through which blocks interact). 100K steps of 256 clips is ~2700 epochs of UCF101
(VideoMAE pretrains UCF101 for 3200).

The data source stays the embedded Moving-MNIST set so the command runs anywhere; for UCF101 add
--config.data.source=video_folder --config.data.path=/data/ucf101/train.
"""
from layerlock_jax.config import defaults as config_defaults

REGIMES = ("concurrent", "sequential", "e2e")


def get_config(regime: str = "concurrent"):
  """Video DeiT-Tiny blockwise config; `regime` is concurrent, sequential or e2e."""
  if regime not in REGIMES:
    raise ValueError(f"unknown regime variant {regime!r}; use one of {REGIMES}")
  c = config_defaults.base_config()
  c.total_steps = 100_000
  c.batch_size = 256
  c.checkpoint_every = 5_000
  c.keep_every = 25_000            # snapshots for depth-wise analysis over training

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 192, 12, 768, 3  # DeiT-Tiny [P-code name, R dims]
  m.patch_size = (2, 8, 8)         # [I: implied by 16x128^2 clips and the (8, 16, 16) mask window]
  m.posemb = "sincos"              # VideoMAE's fixed table
  m.dtype = "bfloat16"
  m.remat_policy = "nothing_saveable"
  m.attention = "dot_product"      # fused attention: each decoder attends over 2048 positions
  d = m.decoder
  d.type = "light"
  d.width, d.depth, d.num_heads, d.mlp_dim = 96, 2, 3, 384

  c.masking.type = "tube"          # [P-code: TubeMaskingGenerator, ratio 0.9]
  c.masking.ratio = 0.9
  c.objective.pixel_norm = "patch_channel"

  o = c.optimizer
  o.lr = 1.5e-4                    # 1.5e-4 * 256 / 256
  o.min_lr = 1e-6
  o.warmup_steps = 5_000
  o.weight_decay = 0.05
  o.grad_clip = 0.0

  bw = c.blockwise
  bw.enabled = True
  bw.regime = regime
  bw.num_segments = 4              # [P-code: 4 or 6 segments of the 12 layers]

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"  # ~5M parameters: replicate, split the batch

  c.data.num_frames = 16
  c.data.image_size = 128
  return c
