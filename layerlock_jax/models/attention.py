"""Fused attention per platform: what `model.attention=auto` picks.

  TPU          the Pallas flash-attention kernel of jax's kernel library
               (jax.experimental.pallas.ops.tpu.flash_attention), inside shard_map (a Mosaic call
               cannot be partitioned by the compiler). Sequences are padded to the kernel's
               128-token blocks; padded keys are masked out with segment ids.
  NVIDIA GPU   cuDNN fused attention (jax.nn.dot_product_attention(implementation="cudnn")).
  CPU          the XLA softmax attention of vit.py (the returned None says so).

The platform is that of the mesh the program is traced under (so a program compiled for
compile-only TPU devices on a CPU machine gets the TPU kernel), else JAX's default backend. A shape
or layout a kernel does not support falls back to XLA with one logged line per shape.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

_BLOCK = 128  # the flash kernel's sequence block
_LOGGED: set = set()


def context_platform() -> str:
  """'tpu', 'gpu' or 'cpu': the platform of the mesh in context, else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None)
  if device is not None:
    return device.platform
  return jax.default_backend()


def _gpu_is_nvidia() -> bool:
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None)
  kind = device.device_kind if device is not None else jax.devices()[0].device_kind
  return "nvidia" in kind.lower() or "h100" in kind.lower() or "a100" in kind.lower()


def _fallback(kernel: str, reason: str) -> None:
  if (kernel, reason) not in _LOGGED:
    _LOGGED.add((kernel, reason))
    logging.warning("attention=auto: %s does not support %s; using XLA attention", kernel, reason)


def choose(q) -> str:
  """The kernel `auto` uses for (B, S, H, Dh) inputs here: "pallas_tpu", "cudnn" or "xla"."""
  platform = context_platform()
  if platform == "tpu":
    reason = tpu_unsupported(q)
    if reason is None:
      return "pallas_tpu"
    _fallback("the Pallas TPU flash kernel", reason)
  elif platform == "gpu" and _gpu_is_nvidia():
    reason = cudnn_unsupported(q)
    if reason is None:
      return "cudnn"
    _fallback("cuDNN fused attention", reason)
  return "xla"


def cudnn_unsupported(q) -> str | None:
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    return f"dtype {q.dtype} (needs bfloat16/float16)"
  if q.shape[-1] > 128 or q.shape[-1] % 8:
    return f"head dim {q.shape[-1]} (needs <= 128, a multiple of 8)"
  return None


def tpu_unsupported(q) -> str | None:
  dh = q.shape[-1]
  if dh > _BLOCK and dh % _BLOCK:
    return f"head dim {dh} (above 128 it must be a multiple of 128)"
  spec = _qkv_spec()
  if spec is not None and spec[1] is not None:
    return f"a sequence axis split over the mesh ({spec[1]})"
  return None


def _qkv_spec() -> PartitionSpec | None:
  """The mesh layout of q/k/v (B, S, H, Dh) under the model's logical-axis rules, or None when no
  mesh is in context."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.axis_names:
    return None
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.logical_to_mesh_axes(("batch", "length", "act_heads", "kv"))


def cudnn_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def flash_attention_tpu(q, k, v):
  """softmax(q k^T / sqrt(Dh)) v on (B, S, H, Dh) by the Pallas TPU flash kernel, per shard."""
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu import flash_attention as flash
  scale = q.shape[-1] ** -0.5

  def local(q, k, v):
    b, s = q.shape[:2]
    padded = -(-s // _BLOCK) * _BLOCK
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # (B, H, S, Dh)
    segments = None
    if padded != s:
      pad = ((0, 0), (0, 0), (0, padded - s), (0, 0))
      q, k, v = (jnp.pad(t, pad) for t in (q, k, v))
      ids = jnp.broadcast_to((jnp.arange(padded) < s).astype(jnp.int32), (b, padded))
      segments = flash.SegmentIds(q=ids, kv=ids)  # padded keys (id 0) never meet real queries
    out = flash.flash_attention(q, k, v, segment_ids=segments, sm_scale=scale)
    return jnp.swapaxes(out[:, :, :s], 1, 2)

  spec = _qkv_spec()
  if spec is None:
    return local(q, k, v)
  spec = PartitionSpec(*(tuple(spec) + (None,) * (4 - len(spec))))
  return jax.shard_map(local, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
