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


def _open(path: str):
  """The npz archive, opened lazily: members are read one at a time (a 4DS-e file is 14 GB)."""
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: no such file")
  try:
    npz = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, ValueError, OSError) as err:
    raise WeightsError(f"{path}: not a readable npz archive ({err})") from err
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise WeightsError(f"{path}: a single .npy array, not an npz archive of parameters")
  return npz


def read(path: str) -> Imported:
  """A 4DS backbone npz -> Imported (nothing is written).

  Memory: each parameter is read once, straight into its slot of the stacked [layers, ...] array,
  so the peak is about one copy of the model (plus one member being read).
  """
  path = os.path.abspath(os.path.expanduser(path))
  with _open(path) as npz:
    return _read(npz, path)


def _read(npz, path: str) -> Imported:
  names = list(npz.files)
  roots = [k[:-len(_PATCH)] for k in names if k.endswith(_PATCH)]
  if len(roots) != 1:
    raise WeightsError(f"{path}: expected exactly one '{_PATCH}' key, found {len(roots)}; not a "
                       f"4DS backbone checkpoint (keys: {sorted(names)[:5]}...)")
  root = roots[0]
  pending = {k[len(root):] for k in names
             if k.startswith(root + "encoder/") or k.startswith(root + "processor/")}

  def get(key, shape):
    """The array at root + key; `shape` is its expected shape, or its rank when an int."""
    if key not in pending:
      raise WeightsError(f"{path}: key {root}{key} is missing")
    pending.discard(key)
    try:
      value = np.asarray(npz[root + key], np.float32)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
      raise WeightsError(f"{path}: {root}{key} cannot be read ({err})") from err
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
  depth = len({m.group(1) for k in pending if (m := re.match(r"processor/layers_(\d+)/", k))})
  if depth == 0:
    raise WeightsError(f"{path}: no {root}processor/layers_<i>/ blocks")
  first = "processor/layers_0/"
  heads = get(first + "attention/query/kernel", 3).shape[1]
  mlp = get(first + "mlp/dense_in/kernel", 2).shape[1]
  pending |= {first + "attention/query/kernel", first + "mlp/dense_in/kernel"}  # read again below
  if d % heads:
    raise WeightsError(f"{path}: {heads} heads do not divide the width {d}")
  hd = d // heads
  shapes = {"attention/out/kernel": (heads, hd, d), "mlp/dense_in/kernel": (d, mlp),
            "mlp/dense_in/bias": (mlp,), "mlp/dense_out/kernel": (mlp, d)}
  for n in ("query", "key", "value"):
    shapes[f"attention/{n}/kernel"] = (d, heads, hd)
    shapes[f"attention/{n}/bias"] = (heads, hd)

  def stack(leaf):
    shape = shapes.get(leaf, (d,))
    out = np.empty((depth, *shape), np.float32)
    for i in range(depth):
      out[i] = get(f"processor/layers_{i}/{leaf}", shape)
    return out

  def stack_qkv(kind):  # (L, D, 3, H, D/H) kernels, (L, 3, H, D/H) biases, q/k/v on axis 2 or 1
    axis = 2 if kind == "kernel" else 1
    shape = (d, heads, hd) if kind == "kernel" else (heads, hd)
    out = np.empty((depth, *shape[:axis - 1], 3, *shape[axis - 1:]), np.float32)
    for j, n in enumerate(("query", "key", "value")):
      index = (slice(None),) * axis + (j,)
      out[index] = stack(f"attention/{n}/{kind}")
    return out

  layers = {
      "norm1": {"scale": stack("attention_norm/scale"), "bias": stack("attention_norm/bias")},
      "qkv": {"kernel": stack_qkv("kernel"), "bias": stack_qkv("bias")},
      "out": {"kernel": stack("attention/out/kernel"), "bias": stack("attention/out/bias")},
      "norm2": {"scale": stack("mlp_norm/scale"), "bias": stack("mlp_norm/bias")},
      "mlp1": {"kernel": stack("mlp/dense_in/kernel"), "bias": stack("mlp/dense_in/bias")},
      "mlp2": {"kernel": stack("mlp/dense_out/kernel"), "bias": stack("mlp/dense_out/bias")}}
  embed = {"patch": {"kernel": kernel.reshape(-1, d),
                     "bias": get("encoder/patch_embedding/Conv_0/bias", (d,))},
           "pos": pos}
  if pending:
    raise WeightsError(f"{path}: parameters we cannot represent: "
                       + ", ".join(root + k for k in sorted(pending)[:6]))
  model = {"width": d, "depth": depth, "mlp_dim": mlp, "num_heads": heads,
           "patch_size": (pt, ph, pw), "posemb": "learned_3d", "layer_norm_eps": 1e-6,
           "gelu_approximate": True, "final_norm": False, "input_mean": (0.0, 0.0, 0.0),
           "input_std": (1.0, 1.0, 1.0)}
  data = {"num_frames": t * pt, "image_size": h * ph}
  params = {"embed": embed, "encoder": {"layers": layers}}
  layout.check(params, model, data, path)
  return Imported("4ds_npz", path, model, data, params)
