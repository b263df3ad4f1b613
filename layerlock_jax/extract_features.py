r"""Encoder features of any clips or videos, from a workdir (trained or imported).

  python -m layerlock_jax.extract_features --workdir=W [--step=N] \
      (--input=X.npy | --videos=DIR) --output=F.npy [--block=-1|all|J] [--pool=none|mean]

--input: uint8 clips (N, T, H, W, 3) at the model's frames and size (an .npy file, memory-mapped).
--videos: every video under DIR, as the data pipeline's evaluation clip of each (centred window
and crop, config.data.frame_stride), in the sorted file order the folder source lists them; files
that cannot be opened are skipped (logged), F.videos.txt names the video of each row, and a video
that fails to decode later gets a NaN row (logged) rather than another video's features. A folder
with split sub-folders (train/, val/, ...) is read from its train split: point --videos at the
split folder you want.
The model's own preprocessing is applied (uint8 / 255, then config.model.input_mean / input_std).

Output F.npy, float32, clips in input order:
  --block=-1 (last block) or J (0 = the embedding, J = block J): (N, tokens, D), or (N, D) with
  --pool=mean; --block=all: (N, depth + 1, tokens, D) / (N, depth + 1, D), index 0 the embedding.
Tokens are in raster (t, h, w) order; with config.model.final_norm the last block's tokens are
taken after that norm (HF VideoMAE's last_hidden_state). Only parameters are read (no optimizer
state); each batch is split over the local devices (batch_size per device, the last batch
padded), and the output is written through a memory map to F.npy.tmp, renamed to F.npy when
complete.
"""
import argparse
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from layerlock_jax.models import video_mae
from layerlock_jax.weights import WeightsError
from layerlock_jax.weights import workdir as workdir_lib


class FeatureError(ValueError):
  """Bad arguments or input for feature extraction; nothing was written."""


def parse_block(block: str, depth: int):
  """'-1' / 'all' / 'J' -> None (all) or a block index in [0, depth]."""
  if block == "all":
    return None
  try:
    j = int(block)
  except ValueError:
    raise FeatureError(f"--block={block!r}: use -1 (last), all, or 0..{depth}") from None
  j = depth + 1 + j if j < 0 else j
  if not 0 <= j <= depth:
    raise FeatureError(f"--block={block}: the model has blocks 0 (embedding) .. {depth}")
  return j


class ClipReader:
  """Random access to the clips of --input or --videos, checked against the model's clip shape."""

  def __init__(self, config, input_path: str = "", videos: str = ""):
    want = video_mae.VideoMAE(config).video_shape
    if bool(input_path) == bool(videos):
      raise FeatureError("pass exactly one of --input=X.npy and --videos=DIR")
    if input_path:
      try:
        self.array = np.load(input_path, mmap_mode="r", allow_pickle=False)
      except (OSError, ValueError) as err:
        raise FeatureError(f"--input={input_path}: not a readable .npy file ({err})") from err
      if self.array.dtype != np.uint8 or self.array.ndim != 5 or self.array.shape[1:] != want:
        raise FeatureError(f"--input={input_path}: {self.array.dtype} {self.array.shape}, expected "
                           f"uint8 (N, {', '.join(map(str, want))}) for this model")
      self.source, self.count = None, self.array.shape[0]
    else:
      from layerlock_jax.data import augment, video_files  # pylint: disable=g-import-not-at-top
      spec = augment.spec_from_config(config.data)
      try:
        self.source = video_files.VideoFolderSource(
            videos, "train", spec, max_decode_frames=config.data.max_decode_frames)
      except (OSError, ValueError) as err:  # not a folder, or no usable video in it
        raise FeatureError(f"--videos={videos}: {err}") from err
      self.count = len(self.source)
    self.names, self.failed = [], []  # --videos: file of each row; rows that could not decode

  def batch(self, start: int, stop: int) -> np.ndarray:
    if self.source is None:
      return np.asarray(self.array[start:stop])
    clips = []
    for i in range(start, stop):
      # The folder source stands in the next good video for one that fails to decode (right for
      # training); here that row would be mislabelled, so it is detected and marked instead.
      before = self.source.bad_input.summary()["replaced"]
      clip = self.source[i]["video"]
      name = self.source.read_record(i).name
      self.names.append(name)
      if self.source.bad_input.summary()["replaced"] != before:
        self.failed.append(i)
      clips.append(clip)
    return np.stack(clips)


def make_forward(model: video_mae.VideoMAE, block, pool: str):
  """jitted (embed, encoder, video) -> features of one batch (see the module docstring)."""
  def forward(embed, encoder, norm, video):
    if block is None:
      out = model.block_outputs(embed, [encoder], video)            # (L+1, B, N, D)
      out = out.at[-1].set(model.encoder_output(norm, out[-1]))
      out = jnp.moveaxis(out, 0, 1)                                  # (B, L+1, N, D)
    else:
      x = model.embed(embed, video)
      ids = jnp.broadcast_to(jnp.arange(model.num_tokens, dtype=jnp.int32), x.shape[:2])
      out = model.run_stack(jax.tree.map(lambda p: p[:block], encoder), x, ids, remat=False)
      if block == model.encoder_depth:
        out = model.encoder_output(norm, out)
    out = out.astype(jnp.float32)
    return out.mean(axis=-2) if pool == "mean" else out
  return jax.jit(forward)


def _progress(done: int, total: int, start: float) -> None:
  width = 30
  filled = width * done // max(total, 1)
  rate = done / max(time.perf_counter() - start, 1e-9)
  sys.stderr.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} clips, "
                   f"{rate:.1f} clips/s")
  if done >= total:
    sys.stderr.write("\n")
  sys.stderr.flush()


def extract(workdir: str, output: str, *, input_path: str = "", videos: str = "",
            step: int | None = None, block: str = "-1", pool: str = "none",
            batch_size: int = 4, progress: bool = True, devices=None) -> tuple:
  """The CLI's work; returns the output's shape. Every argument is checked (and the checkpoint
  found) before the parameters are read, and F.npy only appears complete."""
  if pool not in ("none", "mean"):
    raise FeatureError(f"--pool={pool!r}: use none or mean")
  if batch_size < 1:
    raise FeatureError(f"--batch_size={batch_size} must be >= 1")
  if not output.endswith(".npy"):
    raise FeatureError(f"--output={output}: must end in .npy")
  config = workdir_lib.load_config(workdir)
  model = video_mae.VideoMAE(config)
  which = parse_block(block, model.encoder_depth)
  reader = ClipReader(config, input_path, videos)
  devices = list(devices or jax.local_devices())
  mesh = Mesh(np.asarray(devices), ("batch",))
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec("batch"))
  _, _, params = workdir_lib.load_params(workdir, step, replicated)
  forward = make_forward(model, which, pool)
  per_step = batch_size * len(devices)
  n, d = reader.count, model.width
  shape = (n,) + ((model.encoder_depth + 1,) if which is None else ()) + (
      () if pool == "mean" else (model.num_tokens,)) + (d,)
  tmp, names = output + ".tmp", output[:-len(".npy")] + ".videos.txt"
  out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
  start = time.perf_counter()
  try:
    for lo in range(0, n, per_step):
      hi = min(lo + per_step, n)
      clips = reader.batch(lo, hi)
      if hi - lo < per_step:  # one compiled shape: pad the last batch
        clips = np.concatenate([clips, np.zeros((per_step - (hi - lo),) + clips.shape[1:],
                                                clips.dtype)])
      feats = forward(params["embed"], params["encoder"], params.get("encoder_norm"),
                      jax.device_put(clips, split))
      out[lo:hi] = np.asarray(feats)[:hi - lo]
      if progress:
        _progress(hi, n, start)
    out[reader.failed] = np.nan
    out.flush()
    del out
    if videos:
      with open(names + ".tmp", "w") as f:
        f.writelines(f"{name}\n" for name in reader.names)
      os.replace(names + ".tmp", names)
    os.replace(tmp, output)
  except BaseException:
    for leftover in (tmp, names + ".tmp"):
      if os.path.exists(leftover):
        os.remove(leftover)
    raise
  if reader.failed:
    logging.warning("%d video(s) failed to decode; their rows are NaN: %s", len(reader.failed),
                    [reader.names[i] for i in reader.failed][:10])
  return shape


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m layerlock_jax.extract_features",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="trained or imported run directory")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--input", default="", help="uint8 clips (N, T, H, W, 3) .npy")
  parser.add_argument("--videos", default="", help="folder of videos")
  parser.add_argument("--output", required=True, help="output .npy")
  parser.add_argument("--block", default="-1", help="-1 (last) | all | J (0 = embedding)")
  parser.add_argument("--pool", default="none", choices=("none", "mean"))
  parser.add_argument("--batch_size", type=int, default=4, help="clips per device per batch")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    shape = extract(args.workdir, args.output, input_path=args.input, videos=args.videos,
                    step=args.step, block=args.block, pool=args.pool, batch_size=args.batch_size)
  except (FeatureError, WeightsError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"wrote {args.output}: float32 {shape}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
