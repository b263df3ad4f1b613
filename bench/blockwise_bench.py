r"""Blockwise SSL step cost and activation memory: concurrent (and sequential) against e2e.

  python bench/blockwise_bench.py [--config=configs/blockwise_deit_tiny.py] [--out=F.json]
  python bench/blockwise_bench.py --config=configs/blockwise_tiny.py --config.batch_size=16

Variants of one config, each the compiled step of layerlock_jax.trainer.Trainer (the program
that trains, not a re-implementation):
  mae             plain video MAE: the same encoder, ONE decoder after the last block
  e2e             end-to-end with every block's decoder attached for measurement (the reference)
  concurrent      every block trained by its local loss, detached block inputs
  sequential[1]   the first sequential stage (block 1 alone, later blocks idle)
  sequential[n]   the last sequential stage (frozen prefix forward-only, block n trains)
Per variant: median step time and process CPU seconds (timed round-robin, see
bench/common.py for why); compiled temp memory (`memory_analysis()`: buffers live during
the step, i.e. activations saved for backward plus workspace) of the program as trained and with
remat off (every activation stored: the activation memory proper), each also with the layer scans
unrolled; and XLA's FLOP count of the unrolled step (a rolled scan is counted once, anchors.md
§10). Why unrolled memory too: XLA (seen on CPU) reuses no buffer across rolled scan loops, so
block j's saved activations stay allocated until the step ends even when nothing needs them after
block j's backward, and the memory a block-local backward could save only shows unrolled.
Ratios are against e2e. On CPU the default config runs at batch 2 in float32 (bfloat16 is
emulated there); the shape of the model is the paper's.
"""
import copy
import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from layerlock_jax import cli

from layerlock_jax import plan
import common
from layerlock_jax.models import video_mae
from layerlock_jax.trainer import Trainer, memory_rows

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "blockwise_deit_tiny.py"),
    "Blockwise config file; override fields with --config.a.b=value.", lock_config=True)
_CPU_BATCH = flags.DEFINE_integer("cpu_batch", 2, "Batch size on CPU when the config's is larger "
                                  "(0: keep the config's).")
_MEMORY = flags.DEFINE_bool("memory", True, "Also compile with remat off and with unrolled layer "
                            "scans, for activation memory and XLA's FLOP count.")
_VARIANTS = flags.DEFINE_list("variants", ["mae", "e2e", "concurrent", "sequential[1]",
                                           "sequential[n]"], "Variants to measure.")
common.define_timing_flags()
flags.FLAGS.set_default("rounds", 3)
flags.FLAGS.set_default("steps", 1)


def variant_config(config, name: str, *, remat: str | None = None, unroll: bool = False):
  """(config, frozen_layers) of a named variant; `unroll` unrolls every layer scan."""
  c = copy.deepcopy(config)
  with c.unlocked():
    if name == "mae":
      c.blockwise.enabled = False
    else:
      c.blockwise.regime = name.split("[")[0]
    if remat is not None:
      c.model.remat_policy = remat
    if unroll:
      c.model.scan_unroll, c.model.decoder.scan_unroll = c.model.depth, c.model.decoder.depth
  frozen = 0
  if name == "sequential[n]":
    bounds = video_mae.VideoMAE(c).boundaries
    frozen = bounds[-2] if len(bounds) > 1 else 0
  return c, frozen


def compile_step(config, frozen_layers: int):
  """(compiled step, trainer, state, video) of the Trainer's step at a stage."""
  trainer = Trainer(config)
  full = common.init_params(trainer)
  spec = plan.stage_spec(config, frozen_layers, "bench")
  st = common.fresh_state(trainer, full, spec)
  video = jax.device_put(common.random_video(config), trainer.video_sharding)
  before = trainer.compile_seconds
  compiled = trainer.step_fn(spec, st, video)
  return compiled, trainer.compile_seconds - before, st, video


def xla_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def temp_bytes(compiled) -> int | None:
  return memory_rows(compiled)["temp_bytes"]


def build(config, name: str, log) -> common.Variant:
  c, frozen = variant_config(config, name)
  compiled, compile_s, st, video = compile_step(c, frozen)
  row = {"group": "blockwise", "variant": name, "batch": c.batch_size, "frozen_layers": frozen,
         "remat": c.model.remat_policy, "compile_s": compile_s, "temp_bytes": temp_bytes(compiled)}
  if _MEMORY.value:
    # (remat, unrolled) -> temp bytes; the as-trained program is (config remat, rolled).
    for remat, unroll in (("none", False), (c.model.remat_policy, True), ("none", True)):
      key = f"temp_bytes{'_unrolled' if unroll else ''}{'_no_remat' if remat == 'none' else ''}"
      if key in row:  # the config's remat is already "none": the same program
        continue
      variant_c, _ = variant_config(config, name, remat=remat, unroll=unroll)
      other = compile_step(variant_c, frozen)[0]
      row[key] = temp_bytes(other)
      if unroll and c.model.remat_policy == "none":
        row["temp_bytes_unrolled"] = row[key]
      if unroll and remat == c.model.remat_policy:
        row["xla_flops"] = xla_flops(other)  # unrolled: XLA counts every layer
  log(f"  {name}: compiled in {compile_s:.0f}s, " + ", ".join(
      f"{k} {v / common.MIB:.1f} MiB" for k, v in row.items() if k.startswith("temp_") and v))
  box = {"state": st}

  def step():
    box["state"], metrics = compiled(box["state"], video)
    jax.block_until_ready((box["state"], metrics))

  return common.Variant("blockwise", name, row, step, compiled)


COLUMNS = (("step ms", "step_s", 1e3), ("cpu ms", "cpu_s", 1e3),
           ("temp MiB", "temp_bytes", 1 / common.MIB),
           ("no-remat MiB", "temp_bytes_no_remat", 1 / common.MIB),
           ("unrolled MiB", "temp_bytes_unrolled", 1 / common.MIB),
           ("unrolled no-remat MiB", "temp_bytes_unrolled_no_remat", 1 / common.MIB),
           ("GFLOP", "xla_flops", 1e-9))


def ratio_table(rows: list[dict]) -> str:
  """Every measured quantity with its ratio to the e2e row."""
  ref = next((r for r in rows if r["variant"] == "e2e"), rows[0])
  cols = [(title, key, scale) for title, key, scale in COLUMNS if any(r.get(key) for r in rows)]
  head = f"{'variant':<15}" + "".join(f"{title:>{len(title) + 2}}{'/e2e':>6}"
                                      for title, _, _ in cols)
  lines = [head, "-" * len(head)]
  for r in rows:
    cells = [f"{r['variant']:<15}"]
    for title, key, scale in cols:
      value, base = r.get(key), ref.get(key)
      cells.append(f"{value * scale if value else float('nan'):>{len(title) + 2}.1f}"
                   f"{value / base if value and base else float('nan'):>6.2f}")
    lines.append("".join(cells))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  config = copy.deepcopy(_CONFIG.value)
  if not config.blockwise.enabled:
    raise app.UsageError("--config must be a blockwise config (config.blockwise.enabled)")
  if jax.devices()[0].platform == "cpu":
    with config.unlocked():
      if _CPU_BATCH.value and config.batch_size > _CPU_BATCH.value:
        config.batch_size = _CPU_BATCH.value
      config.model.dtype = "float32"
  env = common.environment()
  m = config.model
  print(f"config: width {m.width} depth {m.depth} heads {m.num_heads}, clip "
        f"{config.data.num_frames}x{config.data.image_size}^2 tubelet {tuple(m.patch_size)}, "
        f"{config.masking.type} mask {config.masking.ratio}, batch {config.batch_size}, "
        f"remat {m.remat_policy}, dtype {m.dtype}, attention {m.attention}, per-segment "
        f"decoder {m.decoder.width}w x {m.decoder.depth}, segments "
        f"{config.blockwise.num_segments or ''}"
        f"{tuple(config.blockwise.boundaries) or ''}", flush=True)
  variants = [build(config, name, lambda s: print(s, flush=True)) for name in _VARIANTS.value]
  f = flags.FLAGS
  print(f"timing {len(variants)} variants ({f.rounds} rounds x {f.steps} steps) ...", flush=True)
  common.time_interleaved(variants, warmup=f.warmup, steps=f.steps, rounds=f.rounds)
  rows = [v.row for v in variants]
  print(ratio_table(rows))
  by = {r["variant"]: r for r in rows}
  if "concurrent" in by and "e2e" in by:
    c, e = by["concurrent"], by["e2e"]
    parts = [f"{title} {c[key] / e[key]:.2f}" for title, key, _ in COLUMNS
             if c.get(key) and e.get(key)]
    print("\nconcurrent / e2e: " + ", ".join(parts))
  env["loadavg_end"] = os.getloadavg()
  print(f"load average {env['loadavg_start']} -> {env['loadavg_end']}")
  common.write_json({"rows": rows, "environment": env}, f.out)


if __name__ == "__main__":
  cli.run(main)
