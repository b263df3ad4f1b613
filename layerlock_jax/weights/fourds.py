"""4DS backbones (google-deepmind/representations4d `scaling4d_*.npz`) -> our encoder.

The released files are flat npz archives of a Flax parameter tree, one array per leaf, keyed by the
"/"-joined path. The backbone is a tokenizer and a plain pre-norm ViT:

  <root>encoder/patch_embedding/Conv_0/{kernel (pt, ph, pw, 3, D), bias (D,)}
  <root>encoder/posenc/embeddings (T', h, w, D)        learned 3-D table, added to the tokens
  <root>processor/layers_<i>/attention_norm/{scale, bias}
  <root>processor/layers_<i>/attention/{query, key, value}/{kernel (D, H, D/H), bias (H, D/H)}
  <root>processor/layers_<i>/attention/out/{kernel (H, D/H, D), bias (D,)}
  <root>processor/layers_<i>/mlp_norm/{scale, bias}
  <root>processor/layers_<i>/mlp/dense_in/{kernel (D, M), bias (M,)}
  <root>processor/layers_<i>/mlp/dense_out/{kernel (M, D), bias (D,)}

<root> is whatever precedes "encoder/" ("params/", or "params/layers_0/" when a readout was saved
with the backbone); other keys (readouts) are ignored. Flax defaults give LayerNorm eps 1e-6 and
the tanh GELU, the tokens are raster (t, h, w) and the input is the RGB clip scaled to [0, 1]: all
our defaults. There is no final norm. A block with query/key LayerNorms (normalize_qk) is refused.
"""
import os
import re
import zipfile

import numpy as np

from layerlock_jax.weights import Imported, WeightsError
from layerlock_jax.weights import layout

_PATCH = "encoder/patch_embedding/Conv_0/kernel"
_BLOCK_LEAVES = (
    "attention_norm/scale", "attention_norm/bias", "mlp_norm/scale", "mlp_norm/bias",
    "attention/query/kernel", "attention/query/bias", "attention/key/kernel", "attention/key/bias",
    "attention/value/kernel", "attention/value/bias", "attention/out/kernel", "attention/out/bias",
    "mlp/dense_in/kernel", "mlp/dense_in/bias", "mlp/dense_out/kernel", "mlp/dense_out/bias")


def _load(path: str) -> dict:
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except (zipfile.BadZipFile, ValueError, OSError) as err:
    raise WeightsError(f"{path}: not a readable npz archive ({err})") from err


def read(path: str) -> Imported:
  """A 4DS backbone npz -> Imported (nothing is written)."""
  path = os.path.abspath(os.path.expanduser(path))
  flat = _load(path)
  roots = [k[:-len(_PATCH)] for k in flat if k.endswith(_PATCH)]
  if len(roots) != 1:
    raise WeightsError(f"{path}: expected exactly one '{_PATCH}' key, found {len(roots)}; not a "
                       f"4DS backbone checkpoint (keys: {sorted(flat)[:5]}...)")
  root = roots[0]
  ours = {k[len(root):]: v for k, v in flat.items()
          if k.startswith(root + "encoder/") or k.startswith(root + "processor/")}

  def get(key, shape):
    """The array at root + key; `shape` is its expected shape, or its rank when an int."""
    if key not in ours:
      raise WeightsError(f"{path}: key {root}{key} is missing")
    value = np.asarray(ours.pop(key), np.float32)
    if (value.ndim != shape) if isinstance(shape, int) else (value.shape != tuple(shape)):
      raise WeightsError(f"{path}: {root}{key} has shape {value.shape}, expected "
                         f"{shape if not isinstance(shape, int) else f'{shape} dims'}")
    return value

  kernel = get(_PATCH, 5)
  pt, ph, pw, channels, d = kernel.shape
  if channels != 3:
    raise WeightsError(f"{path}: {root}{_PATCH} has {channels} input channels, expected 3 (RGB)")
  pos = get("encoder/posenc/embeddings", 4)
  if pos.shape[3] != d:
    raise WeightsError(f"{path}: {root}encoder/posenc/embeddings has shape {pos.shape}, expected "
                       f"width {d} last")
  t, h, w = pos.shape[:3]
  if h * ph != w * pw:
    raise WeightsError(f"{path}: position table {pos.shape} with patch {(ph, pw)} is a non-square "
                       "frame; only square image_size is supported")
  depth = len({m.group(1) for k in ours if (m := re.match(r"processor/layers_(\d+)/", k))})
  if depth == 0:
    raise WeightsError(f"{path}: no {root}processor/layers_<i>/ blocks")
  first = f"processor/layers_0/"
  if first + "attention/query/kernel" not in ours or first + "mlp/dense_in/kernel" not in ours:
    raise WeightsError(f"{path}: key {root}{first}attention/query/kernel or "
                       f"{root}{first}mlp/dense_in/kernel is missing")
  heads = np.shape(ours[first + "attention/query/kernel"])[1]
  mlp = np.shape(ours[first + "mlp/dense_in/kernel"])[-1]
  if d % heads:
    raise WeightsError(f"{path}: {heads} heads do not divide the width {d}")
  hd = d // heads
  shapes = {"attention/out/kernel": (heads, hd, d), "mlp/dense_in/kernel": (d, mlp),
            "mlp/dense_in/bias": (mlp,), "mlp/dense_out/kernel": (mlp, d)}
  for n in ("query", "key", "value"):
    shapes[f"attention/{n}/kernel"] = (d, heads, hd)
    shapes[f"attention/{n}/bias"] = (heads, hd)
  blocks = [{leaf: get(f"processor/layers_{i}/{leaf}", shapes.get(leaf, (d,)))
             for leaf in _BLOCK_LEAVES} for i in range(depth)]
  embed = {"patch": {"kernel": kernel.reshape(-1, d),
                     "bias": get("encoder/patch_embedding/Conv_0/bias", (d,))},
           "pos": pos}
  if ours:
    raise WeightsError(f"{path}: parameters we cannot represent: "
                       + ", ".join(root + k for k in sorted(ours)[:6]))

  def stack(fn):
    return np.stack([fn(b) for b in blocks])

  layers = {
      "norm1": {"scale": stack(lambda b: b["attention_norm/scale"]),
                "bias": stack(lambda b: b["attention_norm/bias"])},
      "qkv": {"kernel": stack(lambda b: np.stack([b[f"attention/{n}/kernel"]
                                                  for n in ("query", "key", "value")], 1)),
              "bias": stack(lambda b: np.stack([b[f"attention/{n}/bias"]
                                                for n in ("query", "key", "value")], 0))},
      "out": {"kernel": stack(lambda b: b["attention/out/kernel"]),
              "bias": stack(lambda b: b["attention/out/bias"])},
      "norm2": {"scale": stack(lambda b: b["mlp_norm/scale"]),
                "bias": stack(lambda b: b["mlp_norm/bias"])},
      "mlp1": {"kernel": stack(lambda b: b["mlp/dense_in/kernel"]),
               "bias": stack(lambda b: b["mlp/dense_in/bias"])},
      "mlp2": {"kernel": stack(lambda b: b["mlp/dense_out/kernel"]),
               "bias": stack(lambda b: b["mlp/dense_out/bias"])}}
  model = {"width": d, "depth": depth, "mlp_dim": mlp, "num_heads": heads,
           "patch_size": (pt, ph, pw), "posemb": "learned_3d", "layer_norm_eps": 1e-6,
           "gelu_approximate": True, "final_norm": False, "input_mean": (0.0, 0.0, 0.0),
           "input_std": (1.0, 1.0, 1.0)}
  data = {"num_frames": t * pt, "image_size": h * ph}
  params = {"embed": embed, "encoder": {"layers": layers}}
  layout.check(params, model, data, path)
  return Imported("4ds_npz", path, model, data, params)
