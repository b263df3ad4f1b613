"""Hugging Face VideoMAE (`VideoMAEModel` / `VideoMAEForPreTraining` / classification) <-> ours.

A `save_pretrained` directory holds config.json and model.safetensors (or a sharded index); it is
read with the safetensors numpy API, so neither torch nor transformers is needed.

What HF's forward pass is, and how each piece maps:
  * tubelet embedding: Conv3d weight (D, 3, pt, ph, pw) on (B, 3, T, H, W); kernel = stride, so it
    is our dense patch projection with rows in (pt, ph, pw, channel) order.
  * position code: a fixed 1-D sin-cos table over the raster token index, sin/cos interleaved
    (not stored in the file) -> config.model.posemb = "sincos_1d".
  * blocks: pre-norm (layernorm_before -> attention -> residual, layernorm_after -> MLP ->
    residual), LayerNorm eps config.layer_norm_eps (1e-12 by default), GELU = hidden_act.
  * attention: q and v biases, no k bias. A k bias adds q.b_k to every logit of one query, which
    softmax ignores, so a zero k bias on import is exact and dropping ours on export loses nothing.
  * final LayerNorm `layernorm`: only when use_mean_pooling is false -> config.model.final_norm
    (the fc_norm of a classifier is not part of the encoder and is not read).
  * input: uint8 / 255, then ImageNet mean/std (or the image_mean/std of preprocessor_config.json).
"""
import json
import logging
import os

import numpy as np

from layerlock_jax.weights import Imported, WeightsError
from layerlock_jax.weights import layout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GELU = {"gelu": False, "gelu_pytorch_tanh": True, "gelu_new": True}  # hidden_act -> approximate
_PREPROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")


def _square(value, field: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise WeightsError(f"config.json {field}={value}: only square sizes can be represented")
    value = value[0]
  return int(value)


def _read_tensors(path: str) -> dict:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single):
    files = [single]
  elif os.path.isfile(index):
    with open(index) as f:
      files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
  else:
    found = sorted(os.listdir(path))
    raise WeightsError(f"{path}: no model.safetensors (found {found[:8]}); re-save the model with "
                       "save_pretrained(..., safe_serialization=True)")
  tensors = {}
  for name in files:
    try:
      tensors.update(load_file(name))
    except Exception as err:  # pylint: disable=broad-except
      raise WeightsError(f"{name}: not a readable safetensors file ({err})") from err
  return tensors


def _input_stats(path: str) -> tuple[tuple, tuple]:
  for name in _PREPROCESSOR_FILES:
    file = os.path.join(path, name)
    if os.path.isfile(file):
      with open(file) as f:
        pre = json.load(f)
      scale = pre.get("rescale_factor", 1 / 255)
      if pre.get("do_rescale", True) and abs(scale - 1 / 255) > 1e-9:
        raise WeightsError(f"{file}: rescale_factor={scale}; only 1/255 can be represented")
      if not pre.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
      return (tuple(float(x) for x in pre.get("image_mean", IMAGENET_MEAN)),
              tuple(float(x) for x in pre.get("image_std", IMAGENET_STD)))
  logging.info("%s has no preprocessor config: using the ImageNet mean/std of VideoMAE", path)
  return IMAGENET_MEAN, IMAGENET_STD


def read_config(path: str) -> tuple[dict, dict, dict]:
  """(HF config, our model fields, our data fields); WeightsError for anything unrepresentable."""
  file = os.path.join(path, "config.json")
  if not os.path.isdir(path) or not os.path.isfile(file):
    raise WeightsError(f"{path}: not a Hugging Face save_pretrained directory (no config.json)")
  try:
    with open(file) as f:
      hf = json.load(f)
  except ValueError as err:
    raise WeightsError(f"{file}: not valid JSON ({err})") from err
  if hf.get("model_type") != "videomae":
    raise WeightsError(f"{file}: model_type={hf.get('model_type')!r}, not a VideoMAE checkpoint")
  if hf.get("hidden_act", "gelu") not in _GELU:
    raise WeightsError(f"{file}: hidden_act={hf['hidden_act']!r} cannot be represented "
                       f"(supported: {sorted(_GELU)})")
  if int(hf.get("num_channels", 3)) != 3:
    raise WeightsError(f"{file}: num_channels={hf['num_channels']}; only RGB (3) is supported")
  width, heads = int(hf.get("hidden_size", 768)), int(hf.get("num_attention_heads", 12))
  if width % heads:
    raise WeightsError(f"{file}: hidden_size={width} is not a multiple of num_attention_heads")
  patch = _square(hf.get("patch_size", 16), "patch_size")
  mean, std = _input_stats(path)
  model = {"width": width, "depth": int(hf.get("num_hidden_layers", 12)),
           "mlp_dim": int(hf.get("intermediate_size", 3072)), "num_heads": heads,
           "patch_size": (int(hf.get("tubelet_size", 2)), patch, patch), "posemb": "sincos_1d",
           "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
           "gelu_approximate": _GELU[hf.get("hidden_act", "gelu")],
           "final_norm": not hf.get("use_mean_pooling", True),
           "input_mean": mean, "input_std": std}
  data = {"num_frames": int(hf.get("num_frames", 16)),
          "image_size": _square(hf.get("image_size", 224), "image_size")}
  return hf, model, data


def _prefix(tensors: dict, path: str) -> str:
  for prefix in ("", "videomae."):
    if prefix + "embeddings.patch_embeddings.projection.weight" in tensors:
      return prefix
  raise WeightsError(f"{path}: no embeddings.patch_embeddings.projection.weight tensor; not a "
                     f"VideoMAE encoder (keys: {sorted(tensors)[:5]}...)")


def read(path: str) -> Imported:
  """A VideoMAE save_pretrained directory -> Imported (nothing is written)."""
  path = os.path.abspath(os.path.expanduser(path))
  _, model, data = read_config(path)
  tensors = _read_tensors(path)
  p = _prefix(tensors, path)
  d, h, m = model["width"], model["num_heads"], model["mlp_dim"]
  pt, ph, pw = model["patch_size"]
  # The shape every tensor must have (torch Linear weights are (out, in)); checked on read so
  # that an error names the file's own key.
  shapes = {"embeddings.patch_embeddings.projection.weight": (d, 3, pt, ph, pw),
            "intermediate.dense.weight": (m, d), "intermediate.dense.bias": (m,),
            "output.dense.weight": (d, m)}

  def get(name):
    key = p + name
    if key not in tensors:
      raise WeightsError(f"{path}: tensor {key} is missing")
    value = np.asarray(tensors[key], np.float32)
    short = name.split(".", 3)[-1] if name.startswith("encoder.layer.") else name
    square = short.endswith(".weight") and "layernorm" not in short
    want = shapes.get(short, (d, d) if square else (d,))
    if value.shape != want:
      raise WeightsError(f"{path}: tensor {key} has shape {value.shape}, expected {want} "
                         "(from config.json)")
    return value

  def linear(name):
    return get(name + ".weight").T

  conv = get("embeddings.patch_embeddings.projection.weight")
  embed = {"patch": {"kernel": conv.transpose(2, 3, 4, 1, 0).reshape(-1, conv.shape[0]),
                     "bias": get("embeddings.patch_embeddings.projection.bias")}}
  layers = []
  for i in range(model["depth"]):
    a = f"encoder.layer.{i}."
    att = a + "attention.attention."
    bias = {}
    for short, legacy in (("query", "q_bias"), ("key", None), ("value", "v_bias")):
      if p + att + short + ".bias" in tensors:
        bias[short] = get(att + short + ".bias")
      elif legacy and p + att + legacy in tensors:
        bias[short] = get(att + legacy)  # transformers 4.x names
      else:
        bias[short] = np.zeros((d,), np.float32)  # qv_bias=false, or the (absent) k bias
    qkv_k = np.stack([linear(att + s).reshape(-1, h, d // h) for s in ("query", "key", "value")], 1)
    qkv_b = np.stack([bias[s].reshape(h, d // h) for s in ("query", "key", "value")], 0)
    layers.append({
        "norm1": {"scale": get(a + "layernorm_before.weight"),
                  "bias": get(a + "layernorm_before.bias")},
        "qkv": {"kernel": qkv_k, "bias": qkv_b},
        "out": {"kernel": linear(a + "attention.output.dense").reshape(h, d // h, -1),
                "bias": get(a + "attention.output.dense.bias")},
        "norm2": {"scale": get(a + "layernorm_after.weight"),
                  "bias": get(a + "layernorm_after.bias")},
        "mlp1": {"kernel": linear(a + "intermediate.dense"),
                 "bias": get(a + "intermediate.dense.bias")},
        "mlp2": {"kernel": linear(a + "output.dense"), "bias": get(a + "output.dense.bias")}})
  if f"{p}encoder.layer.{model['depth']}.layernorm_before.weight" in tensors:
    raise WeightsError(f"{path}: more encoder layers than num_hidden_layers={model['depth']}")
  stacked = {k: {n: np.stack([l[k][n] for l in layers]) for n in layers[0][k]}
             for k in layers[0]} if layers else {}
  params = {"embed": embed, "encoder": {"layers": stacked}}
  if model["final_norm"]:
    params["encoder_norm"] = {"scale": get("layernorm.weight"), "bias": get("layernorm.bias")}
  layout.check(params, model, data, path)
  return Imported("hf_videomae", path, model, data, params)


def write(model: dict, data: dict, params: dict, path: str) -> None:
  """Our encoder -> a VideoMAEModel save_pretrained directory (config.json, model.safetensors,
  preprocessor_config.json). `params` as returned by workdir.load_params; raises WeightsError
  before writing anything if the architecture has no HF VideoMAE equivalent."""
  if model["posemb"] != "sincos_1d":
    why = ("RoPE rotates q/k inside every block, which VideoMAE's attention cannot do"
           if model["posemb"] == "rope" else
           "VideoMAE adds a fixed 1-D sin-cos table that is not stored in the checkpoint, so a "
           "learned or 3-D table cannot be carried")
    raise WeightsError(f"model.posemb={model['posemb']!r} cannot be exported to HF VideoMAE: {why} "
                       "(only posemb='sincos_1d' models are exportable)")
  pt, ph, pw = model["patch_size"]
  if ph != pw:
    raise WeightsError(f"model.patch_size={model['patch_size']}: HF VideoMAE needs square patches")
  layout.check(params, model, data, "export")
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  d, h = model["width"], model["num_heads"]
  enc = params["encoder"]["layers"]
  kernel = params["embed"]["patch"]["kernel"]
  tensors = {"embeddings.patch_embeddings.projection.weight":
                 kernel.reshape(pt, ph, pw, 3, d).transpose(4, 3, 0, 1, 2),
             "embeddings.patch_embeddings.projection.bias": params["embed"]["patch"]["bias"]}
  for i in range(model["depth"]):
    a = f"encoder.layer.{i}."
    att = a + "attention.attention."
    for j, short in enumerate(("query", "key", "value")):
      tensors[att + short + ".weight"] = enc["qkv"]["kernel"][i][:, j].reshape(d, d).T
    # Legacy bias names: transformers 4.x reads them as is and 5.x renames them on load.
    tensors[att + "q_bias"] = enc["qkv"]["bias"][i][0].reshape(d)
    tensors[att + "v_bias"] = enc["qkv"]["bias"][i][2].reshape(d)
    tensors[a + "attention.output.dense.weight"] = enc["out"]["kernel"][i].reshape(d, d).T
    tensors[a + "attention.output.dense.bias"] = enc["out"]["bias"][i]
    tensors[a + "layernorm_before.weight"] = enc["norm1"]["scale"][i]
    tensors[a + "layernorm_before.bias"] = enc["norm1"]["bias"][i]
    tensors[a + "layernorm_after.weight"] = enc["norm2"]["scale"][i]
    tensors[a + "layernorm_after.bias"] = enc["norm2"]["bias"][i]
    tensors[a + "intermediate.dense.weight"] = enc["mlp1"]["kernel"][i].T
    tensors[a + "intermediate.dense.bias"] = enc["mlp1"]["bias"][i]
    tensors[a + "output.dense.weight"] = enc["mlp2"]["kernel"][i].T
    tensors[a + "output.dense.bias"] = enc["mlp2"]["bias"][i]
  if model.get("final_norm"):
    tensors["layernorm.weight"] = params["encoder_norm"]["scale"]
    tensors["layernorm.bias"] = params["encoder_norm"]["bias"]
  config = {"architectures": ["VideoMAEModel"], "model_type": "videomae",
            "image_size": int(data["image_size"]), "patch_size": int(ph), "num_channels": 3,
            "num_frames": int(data["num_frames"]), "tubelet_size": int(pt), "hidden_size": d,
            "num_hidden_layers": int(model["depth"]), "num_attention_heads": h,
            "intermediate_size": int(model["mlp_dim"]),
            "hidden_act": "gelu_pytorch_tanh" if model["gelu_approximate"] else "gelu",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "layer_norm_eps": float(model["layer_norm_eps"]), "qkv_bias": True, "qv_bias": True,
            "use_mean_pooling": not model.get("final_norm"), "torch_dtype": "float32"}
  preprocessor = {"image_processor_type": "VideoMAEImageProcessor", "do_rescale": True,
                  "rescale_factor": 1 / 255, "do_normalize": True,
                  "image_mean": list(model["input_mean"]), "image_std": list(model["input_std"]),
                  "do_resize": True, "size": {"shortest_edge": int(data["image_size"])},
                  "do_center_crop": True,
                  "crop_size": {"height": int(data["image_size"]),
                                "width": int(data["image_size"])}}
  os.makedirs(path, exist_ok=True)
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
            os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
    json.dump(preprocessor, f, indent=2)
