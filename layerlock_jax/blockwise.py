"""Blockwise self-supervised learning (arXiv 2601.09040, papers.md §2 and §5.6).

The encoder's L layers are cut into n contiguous *blocks* at cumulative `boundaries`
b_1 < ... < b_n = L (b_0 = 0); block j is layers b_{j-1}+1 .. b_j. Every block owns a light decoder
and a per-patch pixel head (parameter groups "block_decoders"/"block_heads", one "block_j" entry
each) and is trained by its own masked-pixel reconstruction loss. The patch embedding belongs to
block 1 (it is block 1's input layer; detaching it would leave it untrained).

Regimes (config.blockwise.regime), all on ONE mask per clip and step shared by every block:

  concurrent  every block each step; the loss is the sum of the local losses, and a stop-gradient
              at every block input (j >= 2) keeps each loss inside its block, so the one backward
              pass never crosses a block boundary ("detached_forward" in the paper's code [I]).
  sequential  one block at a time: block j trains alone for its step budget on the output of the
              frozen blocks 1..j-1 (forward only, as LayerLock's frozen prefix), blocks after it
              are idle (neither run nor updated). Freeze stages come from schedule.freeze_table,
              the trainable/frozen/idle split from state.partition (StageSpec.idle_layers).
  e2e         the end-to-end baseline ("e2e_attached"): no stop-gradient between blocks, the
              encoder is trained by the LAST block's loss only; every other block's decoder reads
              stop_gradient(x_j), so its loss trains that decoder alone and only measures how well
              pixels decode from depth b_j.

Cost (bench/blockwise_bench.py, DeiT-Tiny at 16x128^2): concurrent and e2e run the same ops, so
their FLOPs, step time and memory agree to ~1%; the per-block decoders, each over all 2048
positions while the encoder sees 208, make either ~3.5x a plain MAE step. What concurrent could
save, holding one block's encoder activations instead of all, is small at 90% masking, and XLA
(seen on CPU) only realises it with unrolled layer scans.

The encoder stays the standard stacked "encoder" tree, so every tool that reads a plain MAE
checkpoint (VideoMAE.block_outputs, the probes, CKA) reads a blockwise one unchanged.

This module is imported by models/video_mae.py, state.py and schedule.py, so it imports none of
them (no cycles); the model comes in as an argument.
"""
import jax
import jax.numpy as jnp

from layerlock_jax import masking
from layerlock_jax import objectives

REGIMES = ("concurrent", "sequential", "e2e")
DECODERS, HEADS = "block_decoders", "block_heads"  # per-block parameter groups
PER_BLOCK_GROUPS = (DECODERS, HEADS)


def enabled(config) -> bool:
  return bool(config.blockwise.enabled) if "blockwise" in config else False


def block_name(j: int) -> str:
  """Key of block j (1-based) in the per-block parameter groups and in metric names."""
  return f"block_{j}"


def block_boundaries(config, encoder_depth: int) -> tuple[int, ...]:
  """Cumulative block ends (b_1, ..., b_n = encoder_depth).

  `config.blockwise.boundaries` when given (uneven splits, e.g. (2, 6, 12)), else num_blocks equal
  blocks. config_validation reports the same problems with field names before anything runs.
  """
  bw = config.blockwise
  if len(bw.boundaries):
    bounds = tuple(int(b) for b in bw.boundaries)
    if (bounds[0] < 1 or any(b <= a for a, b in zip(bounds, bounds[1:]))
        or bounds[-1] != encoder_depth):
      raise ValueError(f"config.blockwise.boundaries={bounds} must be strictly increasing, >= 1 "
                       f"and end at the encoder depth {encoder_depth}")
    return bounds
  n = int(bw.num_blocks)
  if not 1 <= n <= encoder_depth or encoder_depth % n:
    raise ValueError(f"config.blockwise.num_blocks={n} must divide the encoder depth "
                     f"{encoder_depth}; pass config.blockwise.boundaries for uneven blocks")
  return tuple(encoder_depth * j // n for j in range(1, n + 1))


def sequential_budgets(config, num_blocks: int) -> tuple[int, ...]:
  """Steps per block in the sequential regime.

  config.blockwise.sequential_steps, or total_steps split evenly (the remainder to the last block).
  Block j < n trains exactly its budget; the last block trains from its start to the end of the run
  (its budget is a lower bound, since the budgets may sum to less than total_steps).
  """
  steps = tuple(int(s) for s in config.blockwise.sequential_steps)
  total = int(config.total_steps)
  if not steps:
    steps = (total // num_blocks,) * (num_blocks - 1)
    steps += (total - sum(steps),)
  if len(steps) != num_blocks or min(steps) < 1 or sum(steps) > total:
    raise ValueError(f"config.blockwise.sequential_steps={steps}: need {num_blocks} budgets >= 1 "
                     f"summing to <= total_steps={total}")
  return steps


def sequential_starts(config, num_blocks: int) -> tuple[int, ...]:
  """First step of each block's stage in the sequential regime (block 1 starts at 0)."""
  budgets = sequential_budgets(config, num_blocks)
  starts, step = [], 0
  for b in budgets:
    starts.append(step)
    step += b
  return tuple(starts)


def _layers(stack, lo: int, hi: int):
  """Layers lo..hi-1 of a stacked parameter tree (the gradient of a slice is zero outside it)."""
  return jax.tree.map(lambda a: a[lo:hi], stack)


def _mask_and_target(video, key, *, model, config):
  """The step's mask (one for every block) and the pixel targets at the masked positions.

  The mask key is derived exactly as in the plain MAE loss, so one block reproduces plain MAE.
  """
  mask_key, _ = masking.split(key)
  visible, masked = masking.sample_mask(mask_key, video.shape[0], model.grid,
                                        config.masking.ratio, config.masking.type)
  target = masking.gather_tokens(
      objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm), masked)
  return visible, masked, target


def local_losses(params, frozen, video, key, *, model, config, spec):
  """Sum of the block losses that train at this stage, per-block metrics, last block's tokens.

  Differentiated w.r.t. `params` only (see the module docstring for what each regime isolates).
  Returns (loss, {"block_j_loss": ...}, tokens of the last block run (B, S_visible, D)).
  """
  regime, bounds = spec.regime, (0,) + tuple(spec.boundaries)
  n = len(bounds) - 1
  visible, masked, target = _mask_and_target(video, key, model=model, config=config)

  embed = params["embed"] if "embed" in params else frozen["embed"]
  tokens = model.embed(embed, video)
  if spec.frozen_layers:  # sequential, j >= 2: the embedding froze with block 1
    tokens = jax.lax.stop_gradient(tokens)
  x = masking.gather_tokens(tokens, visible)

  if regime == "sequential":
    # Finished blocks: forward only, no remat (nothing is saved for a backward that never comes).
    if spec.frozen_layers:
      x = jax.lax.stop_gradient(model.run_stack(frozen["encoder"], x, visible, remat=False))
    blocks = [(spec.active_block, params["encoder"])]
  else:
    blocks = [(j, _layers(params["encoder"], bounds[j - 1], bounds[j])) for j in range(1, n + 1)]

  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  for j, stack in blocks:
    if regime == "concurrent" and j > 1:
      x = jax.lax.stop_gradient(x)  # the block boundary: block j-1 gets nothing from loss j
    x = model.run_stack(stack, x, visible, remat=True)
    # e2e: only the last block's loss reaches the encoder; the others only train their decoders.
    readout = jax.lax.stop_gradient(x) if regime == "e2e" and j < n else x
    name = block_name(j)
    feats = model.decode(params[DECODERS][name], readout, visible, masked)
    block_loss = objectives.mse(model.predict_pixels(params[HEADS][name], feats), target)
    metrics[f"{name}_loss"] = block_loss
    loss = loss + block_loss
  return loss, metrics, x

