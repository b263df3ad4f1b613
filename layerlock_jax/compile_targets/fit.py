"""`python -m layerlock_jax.aot --fit`: the largest batch that fits HBM, per remat policy and mesh.

Every point of the search is the run's own train step compiled by `aot.plan` (the TPU compiler
with --topology, the XLA:CPU estimate otherwise); there is no separate planning model. For each
(mesh split, remat policy) the global batch is searched in steps of the batch-parallel size: a
compiled point gives bytes = fixed + per-clip x batch, a refused one the compiler's asked bytes,
and the next batch is aimed just under the limit from those, bisecting when the aim misses.

Results are cached in a JSON file keyed by everything that decides the program (config, devices,
stages, jax and libtpu versions), so a rerun of the same search compiles nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib

from layerlock_jax.plan import options

# Least recompute first: the tie-break between policies that fit the same batch.
RECOMPUTE_ORDER = options.REMAT_BY_RECOMPUTE


@dataclasses.dataclass
class Point:
  """One compiled (or refused) candidate: the peak over its stages."""
  mesh: tuple[int, int, int]
  remat_policy: str
  batch_size: int
  peak_bytes: int | None        # args + temps + outputs of the largest stage (None: refused)
  asked_bytes: int | None       # the compiler's asked bytes when refused
  fixed_bytes: int | None       # state bytes (arguments other than the batch)
  fits: bool
  compiled_flops_per_clip: float | None
  hardware_flops_per_clip: float | None
  cached: bool
  note: str = ""


def _versions() -> dict:
  out = {}
  for name in ("jax", "jaxlib", "libtpu", "flax"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def cache_key(config, target: dict, stages: str) -> str:
  text = json.dumps({"config": json.loads(config.to_json_best_effort(sort_keys=True)),
                     "target": target, "stages": stages, "versions": _versions()},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


class Cache:
  """key -> the plan's stage rows, in one JSON file (written after every new compile)."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self.entries = json.loads(self.path.read_text()) if self.path.exists() else {}

  def get(self, key):
    return self.entries.get(key)

  def put(self, key, value):
    self.entries[key] = value
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.entries))
    tmp.replace(self.path)


def candidate_config(config, mesh, remat_policy: str, batch_size: int):
  c = config.copy_and_resolve_references()
  c.batch_size = int(batch_size)
  c.model.remat_policy = remat_policy
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = (int(x) for x in mesh)
  return c


def point_from_rows(mesh, policy, batch, rows, limit_bytes, num_devices, cached) -> Point:
  refused = [r for r in rows if "refused" in r]
  compiled = [r for r in rows if "refused" not in r]
  fixed = max((r["argument_bytes"] - r["batch_bytes"] for r in compiled), default=None)
  if refused:
    asked = max(r["refused"]["asked_bytes"] or 0 for r in refused) or None
    return Point(mesh, policy, batch, None, asked, fixed, False, None, None, cached)
  peak = max(compiled, key=lambda r: r["total_bytes"])
  per_clip = lambda x: x * num_devices / batch if x is not None else None
  return Point(mesh, policy, batch, int(peak["total_bytes"]), None, fixed,
               peak["total_bytes"] <= limit_bytes, per_clip(peak.get("compiled_flops")),
               peak["hardware_flops"] / batch, cached)


def _aim(point: Point, limit: int, unit: int, fixed_guess: int) -> int:
  """The batch (a multiple of `unit`) whose bytes a straight line through `point` puts at 98% of
  the limit: the state is fixed, the rest grows with the batch."""
  fixed = point.fixed_bytes if point.fixed_bytes is not None else fixed_guess
  if point.peak_bytes is not None:
    per_clip = max(point.peak_bytes - fixed, 1) / point.batch_size
  else:
    per_clip = max(point.asked_bytes or 0, 1) / point.batch_size  # asked: the temporaries
  return int((0.98 * limit - fixed) / per_clip) // unit * unit


def search_batch(evaluate, start: int, unit: int, limit: int, max_batch: int,
                 max_compiles: int) -> list[Point]:
  """Points tried for one (mesh, policy), ending at the largest fitting batch found."""
  lo, hi, points, fixed_guess = 0, None, [], 0
  batch = max(unit, start // unit * unit)
  for _ in range(max_compiles):
    point = evaluate(batch)
    points.append(point)
    if point.fixed_bytes is not None:
      fixed_guess = point.fixed_bytes
    if point.fits:
      lo = batch
      if point.peak_bytes is not None and point.peak_bytes >= 0.95 * limit:
        break  # within 5% of the limit: the next clip-step would not be worth a compile
    else:
      hi = batch
    upper = hi if hi is not None else max_batch + unit
    if upper - lo <= unit:
      break
    aim = _aim(point, limit, unit, fixed_guess)
    if not lo < aim < upper:
      aim = (lo + upper) // 2 // unit * unit if hi is not None else min(2 * batch, max_batch)
      if not lo < aim < upper:
        break
    batch = aim
  return points


def choose(points: list[Point]) -> Point | None:
  """The largest fitting batch, then the least recompute."""
  fitting = [p for p in points if p.fits]
  if not fitting:
    return None
  order = {name: i for i, name in enumerate(RECOMPUTE_ORDER)}
  return max(fitting, key=lambda p: (p.batch_size, -order.get(p.remat_policy, len(order))))


def parse_meshes(text: str, config) -> list[tuple[int, int, int]]:
  """'config' or 'data,fsdp,tensor;...' (-1 allowed once per mesh, as in config.mesh)."""
  if text in ("", "config"):
    return [(int(config.mesh.data), int(config.mesh.fsdp), int(config.mesh.tensor))]
  meshes = []
  for part in text.split(";"):
    sizes = part.split(",")
    if len(sizes) != 3:
      raise ValueError(f"--fit_meshes: {part!r} is not data,fsdp,tensor (e.g. -1,1,1;1,-1,1)")
    meshes.append(tuple(int(x) for x in sizes))
  return meshes


def format_frontier(points: list[Point], limit: int, choice: Point | None) -> str:
  gib = 1024 ** 3
  lines = [f"fit search: {len(points)} points ({sum(not p.cached for p in points)} compiled now, "
           f"{sum(p.cached for p in points)} from the cache); limit {limit / gib:.2f} GiB per chip",
           "  mesh (d,f,t)   remat                              batch  per-chip GiB  fits  "
           "compiled GFLOP/clip  analytic hw GFLOP/clip"]
  for p in sorted(points, key=lambda p: (p.mesh, p.remat_policy, p.batch_size)):
    size = (f"{p.peak_bytes / gib:12.3f}" if p.peak_bytes is not None
            else f"{'>' + format((p.asked_bytes or 0) / gib, '.2f'):>12}")
    flops = lambda x: f"{x / 1e9:19.1f}" if x is not None else f"{'-':>19}"
    lines.append(f"  {str(p.mesh):<14} {p.remat_policy:<32} {p.batch_size:>7}  {size}  "
                 f"{'yes' if p.fits else 'no':<4} {flops(p.compiled_flops_per_clip)}  "
                 f"{flops(p.hardware_flops_per_clip)}")
  if choice is None:
    lines.append("nothing fitted: try more chips, --fit_meshes with fsdp/tensor, or another "
                 "remat policy")
  else:
    d, f, t = choice.mesh
    lines.append(f"choice: batch {choice.batch_size}, remat {choice.remat_policy}, mesh "
                 f"data={d} fsdp={f} tensor={t}")
    lines.append(f"--config.batch_size={choice.batch_size} "
                 f"--config.model.remat_policy={choice.remat_policy} --config.mesh.data={d} "
                 f"--config.mesh.fsdp={f} --config.mesh.tensor={t}")
  return "\n".join(lines)
