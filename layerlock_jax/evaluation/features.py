"""Per-block features of a frozen encoder: mean-pooled clip features and (optionally) tokens.

The encoder is run on the FULL clip (no masking), as every frozen-readout protocol does
(arXiv 2601.09040, 2412.15212): `VideoMAE.block_outputs` gives the embedding (index 0)
and the output of every encoder block (index j = block j). The decoder and heads are never touched.

Why one jitted function over fixed-size batches: evaluation walks hundreds of clips through the
encoder, often repeatedly (every block, every periodic evaluation). Padding the last batch to the
same size means the forward compiles once per (parameter structure, batch size) and is then reused.
Parameters are only read: nothing is donated, so the caller's arrays stay valid and unchanged.

Memory: pooled features for every block are small ([L+1, N, D]). Tokens are [N, T', h*w, D] per
block, so they are only kept for the blocks and the first clips the caller asks for.
"""
import dataclasses
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from layerlock_jax.models import video_mae
from layerlock_jax import state as state_lib


def encoder_parts(params: Any) -> tuple[dict, list]:
  """(embed params, [stacked block trees in depth order]) from a full tree or a TrainState.

  A full parameter tree (state.merge(params, frozen), or a restored checkpoint) has the encoder as
  one stack. A TrainState keeps the frozen prefix and the trainable suffix apart; passing both
  stacks to `block_outputs` avoids concatenating (copying) the encoder just to evaluate it.
  """
  if isinstance(params, state_lib.TrainState):
    # Depth order: frozen prefix, trainable blocks, then (blockwise sequential) the idle suffix of
    # blocks not yet trained, which still exist and are evaluated as they are.
    return params.group("embed"), state_lib.encoder_stacks(params.params, params.frozen)
  if "embed" not in params or "encoder" not in params:
    raise ValueError(f"expected a parameter tree with 'embed' and 'encoder', got {sorted(params)}")
  return params["embed"], [params["encoder"]]


def block_names(depth: int) -> list[str]:
  """Row names of the per-block tables: the embedding, then blocks 1..depth."""
  return ["embed"] + [f"block_{j}" for j in range(1, depth + 1)]


@dataclasses.dataclass
class Features:
  """Host-side features of N clips.

  pooled: float32 [depth + 1, N, D], index 0 = embedding, j = block j, tokens averaged per clip.
  tokens: {block index: float32 [M, T', h*w, D]} for the requested blocks and the first M clips
    (time-major, the 4DS readout layout: the attentive probe adds a temporal embedding on axis 1).
  """
  pooled: np.ndarray
  tokens: dict[int, np.ndarray]
  grid: tuple[int, int, int]

  @property
  def depth(self) -> int:
    return self.pooled.shape[0] - 1

  @property
  def num_clips(self) -> int:
    return self.pooled.shape[1]


def _config_key(config) -> str:
  """A hashable stand-in for what `VideoMAE.block_outputs` depends on: the model section and the
  clip shape (ConfigDicts themselves are not hashable). Runs that differ elsewhere (seed,
  objective, freeze schedule) share one compiled forward instead of compiling their own."""
  return json.dumps({"model": json.loads(config.model.to_json_best_effort()),
                     "clip": [int(config.data.num_frames), int(config.data.image_size)]},
                    sort_keys=True)


# (config JSON, sharding) -> (model, jitted forward). jax.jit caches compilations per function
# object, so building the function once per config lets every new extractor (each periodic
# evaluation, each model compared on the same config) reuse the compiled programs.
_FORWARDS: dict[tuple[str, Any], tuple[video_mae.VideoMAE, Any]] = {}


def _compiled_forward(config, sharding):
  key = (_config_key(config), sharding)
  if key not in _FORWARDS:
    model = video_mae.VideoMAE(config)

    def forward(embed, stacks, video, token_blocks):
      outs = model.block_outputs(embed, stacks, video).astype(jnp.float32)  # [L+1, B, N, D]
      pooled = outs.mean(axis=2)
      tokens = outs[np.asarray(token_blocks, np.int32)] if token_blocks else None
      return pooled, tokens

    kwargs = {"static_argnames": ("token_blocks",)}
    if sharding is not None:
      kwargs["out_shardings"] = sharding
    _FORWARDS[key] = (model, jax.jit(forward, **kwargs))
  return _FORWARDS[key]


class FeatureExtractor:
  """Runs a VideoMAE encoder on batches of clips and returns per-block features.

  `sharding`: when the parameters live on a mesh (in-training evaluation), a fully replicated
  NamedSharding of that mesh. Clips are placed with it and outputs are requested with it, so
  every process can read the full result locally; without it, default placement is used.
  """

  def __init__(self, config: Any, *, batch_size: int = 32,
               sharding: jax.sharding.Sharding | None = None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.model, self._forward = _compiled_forward(config, sharding)
    self.batch_size = batch_size
    self.sharding = sharding

  def __call__(self, params: Any, videos: np.ndarray, *, token_blocks: Sequence[int] = (),
               token_clips: int | dict[int, int | None] | None = None) -> Features:
    """Features of `videos` (uint8 or float [N, T, H, W, 3]) under `params`.

    params: a full parameter tree or a TrainState (see `encoder_parts`).
    token_blocks: block indices (0 = embedding) whose tokens to return; token_clips: how many of
      the first clips to return tokens for (default: all), or {block: that number} per block
      (one pass over the clips serves blocks that need all clips and blocks that need a few).
    """
    embed, stacks = encoder_parts(params)
    depth = sum(video_mae.stack_depth(s) for s in stacks)
    token_blocks = tuple(sorted({int(b) for b in token_blocks}))
    if any(not 0 <= b <= depth for b in token_blocks):
      raise ValueError(f"token_blocks must lie in [0, {depth}], got {token_blocks}")
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[1:] != self.model.video_shape:
      raise ValueError(f"expected videos [N, {', '.join(map(str, self.model.video_shape))}], "
                       f"got {videos.shape}")
    n = videos.shape[0]
    limits = token_clips if isinstance(token_clips, dict) else {b: token_clips for b in token_blocks}
    clips = {b: n if limits.get(b) is None else max(0, min(int(limits[b]), n))
             for b in token_blocks}
    pooled_parts, token_parts = [], {b: [] for b in token_blocks}
    for start in range(0, n, self.batch_size):
      chunk = videos[start:start + self.batch_size]
      valid = chunk.shape[0]
      if valid < self.batch_size:
        pad = np.zeros((self.batch_size - valid,) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      # Tokens of a block are only requested for batches that hold some of its first clips: a
      # compiled variant per set of blocks, but no device-to-host copy of tokens nobody keeps.
      wanted = tuple(b for b in token_blocks if start < clips[b])
      video = jnp.asarray(chunk) if self.sharding is None else jax.device_put(chunk, self.sharding)
      pooled, tokens = self._forward(embed, stacks, video, wanted)
      pooled_parts.append(np.asarray(pooled)[:, :valid])
      if wanted:
        tokens = np.asarray(tokens)
        for i, b in enumerate(wanted):
          token_parts[b].append(tokens[i, :min(valid, clips[b] - start)])
    t, h, w = self.model.grid
    d = self.model.width
    token_arrays = {
        b: (np.concatenate(parts) if parts else np.zeros((0, t * h * w, d), np.float32)
            ).reshape(-1, t, h * w, d)
        for b, parts in token_parts.items()}
    return Features(pooled=np.concatenate(pooled_parts, axis=1), tokens=token_arrays,
                    grid=self.model.grid)
