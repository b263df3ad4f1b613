r"""Blockwise SSL on a video DeiT-Small, the paper's larger backbone (arXiv 2601.09040).

  python -m layerlock_jax.main --config=configs/blockwise_deit_small.py --workdir=/tmp/bw_small
  python -m layerlock_jax.main --config=configs/blockwise_deit_small.py:sequential --workdir=/tmp/s
  python -m layerlock_jax.main --config=configs/blockwise_deit_small.py:e2e --workdir=/tmp/e

configs/blockwise_deit_tiny.py (clips, tube masking, 4 segments of 3 layers, regimes, VideoMAE's
optimisation recipe, data: see there) with the DeiT-Small encoder (384 wide, 12 deep, 6 heads,
MLP 1536) and per-segment decoders at half its width (192, 3 heads, MLP 768: VideoMAE-S's decoder;
2 decoder blocks, as for Tiny). ~22M parameters: still replicated, the batch split.
"""
import pathlib

from layerlock_jax.config import loading as config_loading

_tiny = config_loading.load_module(pathlib.Path(__file__).with_name("blockwise_deit_tiny.py"))

REGIMES = _tiny.REGIMES


def get_config(regime: str = "concurrent"):
  """Video DeiT-Small blockwise config; `regime` is concurrent, sequential or e2e."""
  c = _tiny.get_config(regime)
  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 384, 12, 1536, 6  # DeiT-Small [P-code name, R dims]
  d = m.decoder
  d.width, d.depth, d.num_heads, d.mlp_dim = 192, 2, 3, 768
  return c
