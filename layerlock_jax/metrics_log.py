"""Where a run's numbers go: `metrics.jsonl`, TensorBoard events and a one-line progress log.

Only process 0 writes (every process may call; others are no-ops). `metrics.jsonl` holds one JSON
object per logged step; on resume, lines at or after the restored step are dropped first, so the
file never holds a step twice (a run killed after logging step s but before checkpointing s
re-logs it).
"""
import json
import logging
import math
import os
import time

import numpy as np

from layerlock_jax import hardware


def _jsonable(value):
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  if isinstance(value, (np.integer, int)):
    return int(value)
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return _jsonable(value.item())
  return value


def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricsLog:
  """Append-only metrics sink with throughput / ETA bookkeeping."""

  def __init__(self, workdir: str, *, is_main: bool, total_steps: int, start_step: int = 0,
               tensorboard: bool = True):
    self.is_main = is_main
    self.total_steps = total_steps
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._last_time, self._last_step = time.perf_counter(), start_step
    if not is_main:
      return
    os.makedirs(workdir, exist_ok=True)
    truncate_jsonl(self.path, start_step)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # purge_step: after a resume, TensorBoard drops the events a killed run wrote past the
      # checkpoint, so no step appears twice.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30,
                               purge_step=start_step + 1 if start_step else None)

  def reset_clock(self, step: int):
    """Restart throughput measurement (after a compile, so it does not count as training)."""
    self._last_time, self._last_step = time.perf_counter(), step

  def write(self, step: int, metrics: dict, *, batch_size: int, flops_per_step: float = 0.0,
            peak_flops: float | None = None) -> dict:
    """Log metrics of `step` (optimizer steps done); adds throughput, ETA and MFU.

    flops_per_step: analytic model FLOPs of one step (flops.step_flops); peak_flops: the combined
    peak FLOP/s of all devices of the run (None: unknown, MFU not logged).
    """
    now = time.perf_counter()
    steps = step - self._last_step
    dt = now - self._last_time
    record = {"step": int(step)}
    record.update({k: _jsonable(v) for k, v in metrics.items()})
    if flops_per_step:
      record["flops_per_step"] = float(flops_per_step)
    if steps > 0 and dt > 0:
      record["steps_per_sec"] = steps / dt
      record["clips_per_sec"] = steps * batch_size / dt
      record["eta_sec"] = (self.total_steps - step) * dt / steps
      if flops_per_step:
        record["achieved_flops_per_sec"] = flops_per_step * steps / dt
        if peak_flops:
          record["mfu"] = hardware.mfu(flops_per_step * steps, dt, peak_flops)
    self._last_time, self._last_step = now, step
    if self.is_main:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
      if self._tb is not None:
        for k, v in record.items():
          if k != "step" and isinstance(v, (int, float)):
            self._tb.add_scalar(k, v, step)
      logging.info("%s", progress_line(record, self.total_steps))
    return record

  def close(self):
    if self._tb is not None:
      self._tb.close()


def progress_line(record: dict, total_steps: int) -> str:
  parts = [f"step {record['step']}/{total_steps}"]
  for key in ("loss", "pixel_loss", "latent_loss", "lr", "grad_norm", "frozen_layers"):
    if key in record and isinstance(record[key], (int, float)):
      parts.append(f"{key} {record[key]:.4g}")
  if "steps_per_sec" in record:
    parts.append(f"{record['steps_per_sec']:.2f} steps/s {record['clips_per_sec']:.1f} clips/s")
    parts.append(f"ETA {format_duration(record['eta_sec'])}")
  if "mfu" in record and isinstance(record["mfu"], float):
    parts.append(f"MFU {100 * record['mfu']:.1f}%")
  return " | ".join(parts)


def truncate_jsonl(path: str, start_step: int):
  """Drop records with step > start_step (they will be recomputed after a resume)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= start_step:
        keep.append(line)
    except (ValueError, KeyError):
      continue  # a torn last line from a killed run
  with open(path + ".tmp", "w") as f:
    f.writelines(keep)
  os.replace(path + ".tmp", path)
