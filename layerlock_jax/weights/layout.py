"""Our encoder's parameter layout, written out once for the readers and writers to check against.

  embed:   patch/kernel (pt*ph*pw*3, D)  -- rows in (pt, ph, pw, channel) order, as vit.patchify
           patch/bias (D,)
           pos (t, h, w, D)               -- learned_3d only
  encoder: layers/{norm1,norm2}/{scale,bias} (L, D)
           layers/qkv/kernel (L, D, 3, H, D/H), layers/qkv/bias (L, 3, H, D/H)
           layers/out/kernel (L, H, D/H, D),   layers/out/bias (L, D)
           layers/mlp1/kernel (L, D, M), layers/mlp1/bias (L, M)
           layers/mlp2/kernel (L, M, D), layers/mlp2/bias (L, D)
  encoder_norm: {scale, bias} (D,)        -- model.final_norm only
"""
import numpy as np

from layerlock_jax.weights import WeightsError


def expected_shapes(model: dict, data: dict) -> dict:
  """{"embed": {...}, "encoder": {...}} of shape tuples for config fields `model` / `data`."""
  d, m, h, depth = model["width"], model["mlp_dim"], model["num_heads"], model["depth"]
  pt, ph, pw = model["patch_size"]
  grid = (data["num_frames"] // pt, data["image_size"] // ph, data["image_size"] // pw)
  embed = {"patch": {"kernel": (pt * ph * pw * 3, d), "bias": (d,)}}
  if model["posemb"] == "learned_3d":
    embed["pos"] = (*grid, d)
  norm = {"scale": (depth, d), "bias": (depth, d)}
  layers = {"norm1": norm, "norm2": dict(norm),
            "qkv": {"kernel": (depth, d, 3, h, d // h), "bias": (depth, 3, h, d // h)},
            "out": {"kernel": (depth, h, d // h, d), "bias": (depth, d)},
            "mlp1": {"kernel": (depth, d, m), "bias": (depth, m)},
            "mlp2": {"kernel": (depth, m, d), "bias": (depth, d)}}
  out = {"embed": embed, "encoder": {"layers": layers}}
  if model.get("final_norm"):
    out["encoder_norm"] = {"scale": (d,), "bias": (d,)}
  return out


def _flat(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flat(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", v


def check(params: dict, model: dict, data: dict, what: str) -> None:
  """Raise WeightsError unless `params` has exactly the layout of `expected_shapes`."""
  want = dict(_flat(expected_shapes(model, data)))
  have = {k: tuple(np.shape(v)) for k, v in _flat(params)}
  problems = [f"{k}: missing" for k in sorted(set(want) - set(have))]
  problems += [f"{k}: unexpected" for k in sorted(set(have) - set(want))]
  problems += [f"{k}: shape {have[k]} != {want[k]}" for k in sorted(set(want) & set(have))
               if have[k] != tuple(want[k])]
  if problems:
    raise WeightsError(f"{what}: parameters do not match the model they describe: "
                       + "; ".join(problems[:8]))
