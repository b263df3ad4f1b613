"""Training-step sweeps: `python bench/sweeps.py [--config=configs/tiny.py] [--out=F.json]`.

For one config, in one process: the compiled train step (bench/common.py) at the config's
own settings and swept over freeze depth k (pixel-target and latent-target LayerLock stages), remat
policy, batch size, attention path and compute dtype, plus the data loader's clips/s beside the
step's consumption. Prints a table (and JSON with --out). Variants are compiled first and timed
round-robin; bench/common.py says why.
"""
import dataclasses
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from layerlock_jax import plan
from layerlock_jax.trainer import Trainer  # noqa: E402  pylint: disable=wrong-import-position
from common import (  # noqa: E402  pylint: disable=wrong-import-position
    DEFAULT_ROUNDS, DEFAULT_STEPS, DEFAULT_WARMUP, _fmt, add_freeze_savings, build_variant,
    define_timing_flags, environment, format_freeze_table, format_table, init_params,
    loader_throughput, saving_fit, time_interleaved, with_overrides, write_json)

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "tiny.py")
SWEEPS = ("freeze", "remat", "batch", "attention", "dtype", "loader")


# --- The sweep driver --------------------------------------------------------------------------
@dataclasses.dataclass
class Settings:
  sweeps: tuple = SWEEPS
  freeze_ks: tuple = ()            # () = 0 .. encoder depth - 1
  remat_policies: tuple = ("none", "nothing_saveable", "dots_saveable",
                           "dots_with_no_batch_dims_saveable")
  batch_sizes: tuple = ()          # () = half, 1x and 2x the config's batch
  attentions: tuple = ("xla", "dot_product")
  dtypes: tuple = ("float32", "bfloat16")
  warmup: int = DEFAULT_WARMUP
  steps: int = DEFAULT_STEPS
  rounds: int = DEFAULT_ROUNDS
  loader_batches: int = 20


def run_sweeps(config, settings: Settings, *, log=print) -> dict:
  """All requested sweeps on `config`; returns {"rows": [...], "environment": {...}}.

  One model init serves every variant (sweeps change no parameter shape), and a sweep value equal
  to the config's own reuses the base variant's compiled step (re-timed inside that sweep), so
  only genuinely different programs are compiled.
  """
  sweeps = tuple(settings.sweeps)
  unknown = set(sweeps) - set(SWEEPS)
  if unknown:
    raise ValueError(f"unknown sweeps {sorted(unknown)}; choose from {SWEEPS}")
  t_start = time.perf_counter()
  env = environment()
  peak: dict = {}
  depth = plan.encoder_depth(config)
  rows = []

  def timed(group_variants):
    log(f"  timing {len(group_variants)} variant(s) ...")
    time_interleaved(group_variants, warmup=settings.warmup, steps=settings.steps,
                     rounds=settings.rounds)
    rows.extend(v.row for v in group_variants)
    return group_variants

  log(f"[base] width {config.model.width} x depth {depth}, batch {config.batch_size}")
  base_trainer = Trainer(config)
  full = init_params(base_trainer)
  base = build_variant("base", "config", config, trainer=base_trainer, full_params=full,
                       peak=peak)
  timed([base])

  if "freeze" in sweeps:
    ks = tuple(settings.freeze_ks) or tuple(range(depth))
    for target in ("pixel", "latent"):
      log(f"[freeze] target={target} k={list(ks)}")
      c = with_overrides(config, layerlock__enabled=True, layerlock__target=target)
      trainer = Trainer(c)
      # k=0 is the same program as the base step (no frozen block, pixel loss only): re-time
      # it here as the reference of this group's savings, for the latent rows too.
      variants = [base.clone(f"freeze_{target}", "k=0")] if 0 in ks else []
      variants += [build_variant(f"freeze_{target}", f"k={k}", c, k, trainer=trainer,
                                 full_params=full, peak=peak) for k in ks if k]
      timed(variants)

  default_batches = (max(1, config.batch_size // 2), config.batch_size, 2 * config.batch_size)
  for sweep, field, values in (
      ("remat", "model__remat_policy", settings.remat_policies),
      ("batch", "batch_size", settings.batch_sizes or default_batches),
      ("attention", "model__attention", settings.attentions),
      ("dtype", "model__dtype", settings.dtypes)):
    if sweep not in sweeps:
      continue
    log(f"[{sweep}] {list(values)}")
    *parents, leaf = field.split("__")
    current = config
    for p in parents:
      current = current[p]
    current = current[leaf]
    variants = []
    for v in values:
      name = f"{leaf}={v}"
      if str(current) == str(v):
        variants.append(base.clone(sweep, name))
      else:
        variants.append(build_variant(sweep, name, with_overrides(config, **{field: v}),
                                      full_params=full, peak=peak))
    timed(variants)

  add_freeze_savings(rows)
  if "loader" in sweeps:
    log("[loader]")
    row = loader_throughput(config, batches=settings.loader_batches)
    row["step_clips_per_s"] = base.row["clips_per_s"]
    row["loader_over_step"] = row["clips_per_s"] / base.row["clips_per_s"]
    rows.append(row)
  env["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
  env["wall_s"] = time.perf_counter() - t_start
  env["cpu_peak_flops"] = peak if env["platform"] == "cpu" else None
  return {"rows": rows, "environment": env}


def report(result: dict, *, title: str = "") -> str:
  rows = result["rows"]
  parts = [title] if title else []
  parts.append(format_table(rows))
  if any("flops_saving" in r for r in rows):
    parts += ["", "Freeze sweep (saving vs k=0 of the same group):", format_freeze_table(rows)]
    for g in sorted({r["group"] for r in rows if "flops_saving" in r}):
      parts.append(f"{g}: realized/theoretical over all k (least-squares slope): wall "
                   f"{_fmt(saving_fit(rows, g), '.2f')}, CPU "
                   f"{_fmt(saving_fit(rows, g, 'cpu_saving'), '.2f')}")
  for r in rows:
    if r["group"] == "loader":
      parts.append(f"\nloader {r['clips_per_s']:.1f} clips/s vs step consumption "
                   f"{r['step_clips_per_s']:.1f} clips/s (loader/step = {r['loader_over_step']:.2f})")
  env = result["environment"]
  parts.append(f"\nwall {env['wall_s']:.0f}s; load average {env.get('loadavg_start')} -> "
               f"{env.get('loadavg_end')}; {env['device_count']} x {env['device_kind']}")
  return "\n".join(parts)



# --- Command line ------------------------------------------------------------------------------
def _define_flags() -> None:
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Config file; override fields with --config.a.b=value.",
      lock_config=True)
  flags.DEFINE_list("sweeps", list(SWEEPS), f"Sweeps to run, of {SWEEPS}.")
  flags.DEFINE_list("freeze_ks", [], "Frozen depths k (default: 0..encoder depth-1).")
  flags.DEFINE_list("remat_policies", list(Settings.remat_policies), "Remat sweep values.")
  flags.DEFINE_list("batch_sizes", [], "Batch sizes (default: half, 1x, 2x the config's).")
  flags.DEFINE_list("attentions", list(Settings.attentions), "config.model.attention values.")
  flags.DEFINE_list("dtypes", list(Settings.dtypes), "Compute dtypes of the dtype sweep.")
  flags.DEFINE_integer("loader_batches", Settings.loader_batches, "Batches timed for the loader.")
  define_timing_flags()


def settings_from_flags() -> Settings:
  f = flags.FLAGS
  return Settings(
      sweeps=tuple(f.sweeps), freeze_ks=tuple(int(k) for k in f.freeze_ks),
      remat_policies=tuple(f.remat_policies), batch_sizes=tuple(int(b) for b in f.batch_sizes),
      attentions=tuple(f.attentions), dtypes=tuple(f.dtypes), warmup=f.warmup, steps=f.steps,
      rounds=f.rounds, loader_batches=f.loader_batches)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  result = run_sweeps(flags.FLAGS.config, settings_from_flags())
  print(report(result))
  write_json(result, flags.FLAGS.out)


if __name__ == "__main__":
  _define_flags()
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
