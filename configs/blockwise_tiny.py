r"""CPU twin of the blockwise-SSL setup (arXiv 2601.09040): trains in a few minutes on 2 cores.

  python -m layerlock_jax.main --config=configs/blockwise_tiny.py --workdir=/tmp/bw_concurrent
  python -m layerlock_jax.main --config=configs/blockwise_tiny.py:sequential --workdir=/tmp/bw_seq
  python -m layerlock_jax.main --config=configs/blockwise_tiny.py:e2e --workdir=/tmp/bw_e2e

The paper's structure at CPU size: a 12-layer video ViT cut into 4 segments of 3 layers, each
segment with its own light decoder + pixel head and its own masked-reconstruction loss, tube
masking at 0.9 with 2x8x8 tubelets (as in the paper's released code). What shrinks: width (64
instead of 192), clip size (16 x 48^2 instead of 16 x 128^2, so 8x6x6 = 288 tokens, 4 of 36
positions visible per frame), decoders (one block of width 32) and the run (600 steps of 16
clips).

Data: the embedded drifting gratings (the paper's probe stimuli), not Moving MNIST. On Moving MNIST
at this size and masking every regime settles within a few hundred steps on predicting the
all-black background (loss ~0.25 = the share of digit patches) and the features probe no better
than an untrained encoder's; a grating is predictable from 4 visible positions only by inferring
its orientation, frequencies and contrast, which is what the probes then read out.

The text after ':' picks the regime (default concurrent): concurrent | sequential | e2e. Overrides:
  --config.blockwise.num_segments=6                6 segments of 2 layers
  --config.blockwise.boundaries='(2, 6, 12)'       uneven segments (cumulative ends)
  --config.blockwise.sequential_steps='(100, 100, 150, 250)'   sequential budgets per segment
Per-segment losses appear as segment_1_loss ... in metrics.jsonl and TensorBoard;
bench/blockwise_probe.py trains concurrent and e2e and prints the per-segment probe table.
"""
from layerlock_jax import config_defaults

REGIMES = ("concurrent", "sequential", "e2e")


def get_config(regime: str = "concurrent"):
  """The CPU blockwise config; `regime` is concurrent, sequential or e2e."""
  if regime not in REGIMES:
    raise ValueError(f"unknown regime variant {regime!r}; use one of {REGIMES}")
  c = config_defaults.base_config()
  c.total_steps = 600
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 200

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 64, 12, 256, 2  # DeiT-Tiny's depth and head dim 32x2
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d"
  m.remat_policy = "none"          # tiny activations: recomputing costs more than it saves
  m.attention = "dot_product"      # faster than the einsum path on CPU here (docs/layerlock.md)
  m.decoder.type = "light"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 32, 1, 2, 128

  c.masking.type = "tube"          # [P-code: tube masking, ratio 0.9]
  c.masking.ratio = 0.9
  c.objective.pixel_norm = "patch"

  c.optimizer.lr = 1e-3
  c.optimizer.min_lr = 1e-5
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.05
  # No global-norm clip (VideoMAE pretrains without one): a clip over all parameters would be the
  # one channel through which the blocks interact (a shared scale factor on every block's update).
  c.optimizer.grad_clip = 0.0

  bw = c.blockwise
  bw.enabled = True
  bw.regime = regime
  bw.num_segments = 4

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "gratings"
  c.data.num_frames = 16
  c.data.image_size = 48
  c.data.num_clips = 2048
  return c
