r"""The XLA:CPU estimate against the TPU compiler, for every size config on whole TPU slices.

  python bench/tpu_grid.py --out=/tmp/tpu_grid                        # the full grid, resumable
  python bench/tpu_grid.py --out=/tmp/tpu_grid --sizes=S,B --topologies=v5e:16x16 --jobs=2
  python bench/tpu_grid.py --out=/tmp/tpu_grid --table_only --markdown=docs/scaling_tpu_grid.md

For each size config (configs/vit_{s,b,l,h,giant,gigantic}.py and configs/vit4b.py, each at its
default variant and recipe) and each topology, it runs two ordinary `python -m layerlock_jax.aot`
commands, each in a process of its own:
  - `--topology=T`: the TPU compiler (libtpu) on compile-only chips of slice T;
  - `--num_devices=N --accelerator=GEN`: the XLA:CPU estimate for a mesh of the same N devices,
    built by the same mesh rules;
both with `--stages=ends`: the first and last stage of each kind (plain MAE: its one stage;
LayerLock: pixels k=0, the first latent stage, the deepest). The 4B config's table has 35
stages, each its own program; inside a kind they differ only in where the stack is cut, so its
memory moves monotonically with k and the ends bound it.
and keeps each one's JSON plan, log, exit status and wall seconds in OUT/. A job whose record
exists is not run again, so an interrupted grid resumes where it stopped. --jobs runs that many
commands side by side (compiles are mostly single-threaded; two fit 2 cores).

The table pairs the two plans stage by stage: per-chip GiB from each, their ratio (estimate / TPU
compiler; above 1 the estimate is pessimistic), whether each says the stage fits with aot's
headroom, and the compile seconds of each. Compile seconds depend on the machine and its load;
the table names the machine's CPU.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

from layerlock_jax import hardware
from layerlock_jax.compile_targets import tpu as tpu_compile

# Size name (config/sizes.py rows) -> its config file, smallest first.
SIZES = {"S": "configs/vit_s.py", "B": "configs/vit_b.py", "L": "configs/vit_l.py",
         "H": "configs/vit_h.py", "g": "configs/vit_giant.py", "G": "configs/vit_gigantic.py",
         "4B": "configs/vit4b.py"}
# The slices: v5p-128 is 64 chips (v5p names count TensorCores, two per chip).
TOPOLOGIES = ("v5p:4x4x4", "v5e:16x16", "v6e:16x16")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def job_name(size: str, topology: str, compiler: str) -> str:
  return f"{size}_{topology.replace(':', '-')}_{compiler}"


def aot_command(size: str, topology: str, compiler: str, json_path: str) -> list[str]:
  """The aot command of one cell: compiler 'tpu' (libtpu), 'tpu_xla' (libtpu, attention=xla) or
  'cpu' (the XLA:CPU estimate)."""
  cmd = [sys.executable, "-m", "layerlock_jax.aot", f"--config={SIZES[size]}", "--stages=ends",
         f"--json={json_path}"]
  if compiler == "tpu":
    return cmd + [f"--topology={topology}"]
  if compiler == "tpu_xla":  # the same program with XLA's attention instead of the Pallas kernel
    return cmd + [f"--topology={topology}", "--config.model.attention=xla"]
  generation = tpu_compile.parse_topology(topology)[0]
  return cmd + [f"--num_devices={tpu_compile.num_chips(topology)}", f"--accelerator={generation}"]


def run_job(out: pathlib.Path, size: str, topology: str, compiler: str, timeout: float) -> dict:
  """Runs one aot command unless its record exists; returns the record."""
  name = job_name(size, topology, compiler)
  record_path = out / f"{name}.record.json"
  if record_path.exists():
    return json.loads(record_path.read_text())
  json_path = out / f"{name}.json"
  cmd = aot_command(size, topology, compiler, str(json_path))
  print(f"[{time.strftime('%H:%M:%S')}] start {name}", flush=True)
  start = time.perf_counter()
  with open(out / f"{name}.log", "w") as log:
    try:
      rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
  record = {"size": size, "topology": topology, "compiler": compiler, "returncode": rc,
            "wall_seconds": time.perf_counter() - start, "command": " ".join(cmd[1:]),
            "plan": json.loads(json_path.read_text()) if json_path.exists() else None}
  if rc == "timeout":
    # Not written: a later run with a longer --timeout retries it.
    print(f"[{time.strftime('%H:%M:%S')}] TIMEOUT {name} after {timeout:.0f}s", flush=True)
    return record
  record_path.write_text(json.dumps(record, indent=1))
  print(f"[{time.strftime('%H:%M:%S')}] done {name}: rc {rc}, {record['wall_seconds']:.0f}s",
        flush=True)
  return record


def load_records(out: pathlib.Path) -> dict:
  records = {}
  for path in sorted(out.glob("*.record.json")):
    r = json.loads(path.read_text())
    records[(r["size"], r["topology"], r["compiler"])] = r
  return records


def _gib(b: float) -> str:
  return f"{b / hardware.GIB:.3f}"


def stage_key(stage: dict) -> tuple:
  return (stage["target"], stage["frozen_layers"])


def table_rows(records: dict, headroom: float = 0.05) -> list[dict]:
  """One row per (size, topology, stage) from the records, estimate and compiler side by side."""
  rows = []
  for size in SIZES:
    for topology in TOPOLOGIES:
      tpu, cpu = records.get((size, topology, "tpu")), records.get((size, topology, "cpu"))
      xla_plan = (records.get((size, topology, "tpu_xla")) or {}).get("plan") or {}
      xla_stages = {stage_key(s): s for s in xla_plan.get("stages", [])}
      if tpu is None and cpu is None:
        continue
      generation = tpu_compile.parse_topology(topology)[0]
      limit = hardware.HBM_GIB[hardware.ACCELERATORS[generation]] * hardware.GIB * (1 - headroom)
      tpu_plan = (tpu or {}).get("plan") or {}
      cpu_plan = (cpu or {}).get("plan") or {}
      tpu_stages = {stage_key(s): s for s in tpu_plan.get("stages", [])}
      cpu_stages = {stage_key(s): s for s in cpu_plan.get("stages", [])}
      keys = sorted(set(tpu_stages) | set(cpu_stages), key=lambda k: (k[0] != "pixels", k[1]))
      if not keys:  # a command that wrote no plan (e.g. a config error): one row saying so
        rows.append({"size": size, "topology": topology, "stage": "-", "error": True,
                     "tpu_rc": (tpu or {}).get("returncode"),
                     "cpu_rc": (cpu or {}).get("returncode")})
        continue
      for key in keys:
        t, c = tpu_stages.get(key), cpu_stages.get(key)
        row = {"size": size, "topology": topology, "chips": tpu_compile.num_chips(topology),
               "stage": f"k={key[1]} {key[0]}",
               "batch_per_chip": (tpu_plan or cpu_plan).get("batch_size", 0) / max(
                   (tpu_plan or cpu_plan).get("num_devices", 1), 1),
               "parameters": (tpu_plan or cpu_plan).get("parameters")}
        if t is not None:
          row["tpu_compile_s"] = t.get("compile_seconds")
          if "refused" in t:
            row["tpu_refused"] = t["refused"]
            row["tpu_fits"] = False
          else:
            row["tpu_bytes"] = t["total_bytes"]
            row["tpu_fits"] = t["total_bytes"] <= limit
        if c is not None:
          row["cpu_bytes"] = c["total_bytes"]
          row["cpu_fits"] = c["total_bytes"] <= limit
          row["cpu_compile_s"] = c.get("compile_seconds")
        if "tpu_bytes" in row and "cpu_bytes" in row:
          row["ratio"] = row["cpu_bytes"] / row["tpu_bytes"]
        x = xla_stages.get(key)
        if x is not None:
          row["tpu_xla_refused"] = "refused" in x
          if "refused" not in x:
            row["tpu_xla_bytes"] = x["total_bytes"]
            if "cpu_bytes" in row:
              row["ratio_xla"] = row["cpu_bytes"] / x["total_bytes"]
        rows.append(row)
  return rows


def xla_cell(row: dict) -> str:
  if "tpu_xla_refused" not in row:
    return "-"
  return "refused" if row["tpu_xla_refused"] else _gib(row["tpu_xla_bytes"])


def markdown(rows: list[dict], cpu_model: str) -> str:
  yes = lambda v: "-" if v is None else ("yes" if v else "**no**")
  secs = lambda v: "-" if v is None else f"{v:.0f}"
  with_xla = any("tpu_xla_refused" in r for r in rows)
  extra = " TPU GiB, attention=xla | ratio to it |" if with_xla else ""
  lines = [f"Compile seconds on {cpu_model}.", "",
           "| size | topology (chips) | clips/chip | stage | TPU GiB/chip | XLA:CPU GiB/chip | "
           "ratio | fits: TPU / estimate | compile s: TPU / XLA:CPU |" + extra,
           "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if with_xla else "")]
  for r in rows:
    if r.get("error"):
      lines.append(f"| {r['size']} | {r['topology']} | - | - | no plan (exit {r['tpu_rc']}) | "
                   f"no plan (exit {r['cpu_rc']}) | - | - | - |" + (" - | - |" if with_xla else ""))
      continue
    if "tpu_refused" in r:
      tpu = f"refused: asks {r['tpu_refused']['asked']} > {r['tpu_refused']['hbm']}"
    else:
      tpu = _gib(r["tpu_bytes"]) if "tpu_bytes" in r else "-"
    cpu = _gib(r["cpu_bytes"]) if "cpu_bytes" in r else "-"
    ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
    lines.append(
        f"| {r['size']} | {r['topology']} ({r['chips']}) | {r['batch_per_chip']:g} | {r['stage']} | "
        f"{tpu} | {cpu} | {ratio} | {yes(r.get('tpu_fits'))} / {yes(r.get('cpu_fits'))} | "
        f"{secs(r.get('tpu_compile_s'))} / {secs(r.get('cpu_compile_s'))} |" +
        (f" {xla_cell(r)} | {r['ratio_xla']:.2f} |" if "ratio_xla" in r
         else f" {xla_cell(r)} | - |" if with_xla else ""))
  return "\n".join(lines) + "\n"


def cpu_model() -> str:
  try:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
      if line.startswith("Model name:"):
        return f'{os.cpu_count()}-core "{line.split(":", 1)[1].strip()}"'
  except OSError:
    pass
  return f"{os.cpu_count()}-core {platform.processor() or 'CPU'}"


def define_flags():
  """The CLI's flags (defined only when run as a command, so that importing defines nothing)."""
  flags.DEFINE_string("out", None, "Directory of the plans, logs and records.")
  flags.DEFINE_list("sizes", list(SIZES), f"Size configs: {', '.join(SIZES)}.")
  flags.DEFINE_list("topologies", list(TOPOLOGIES), "TPU slices, e.g. v5e:16x16.")
  flags.DEFINE_integer("jobs", 1, "aot commands run side by side.")
  flags.DEFINE_float("timeout", 3600.0, "Seconds per aot command.")
  flags.DEFINE_enum("order", "topology", ["topology", "size"],
                    "topology: every size on the first slice before the next slice; "
                    "size: each size on every slice before the next size.")
  flags.DEFINE_bool("table_only", False, "Compile nothing: the table from OUT.")
  flags.DEFINE_bool("attention_xla", False, "Also compile each cell on the TPU compiler with "
                    "--config.model.attention=xla, which splits the estimate's error from the "
                    "Pallas kernel's saving (XLA:CPU always runs XLA's attention).")
  flags.DEFINE_string("markdown", "", "Also write the table to this file.")


def main(argv):
  del argv
  if not FLAGS.out:
    sys.exit("--out is required, e.g. --out=/tmp/tpu_grid")
  unknown = [s for s in FLAGS.sizes if s not in SIZES]
  if unknown:
    sys.exit(f"--sizes: {', '.join(unknown)} not among {', '.join(SIZES)}")
  for topology in FLAGS.topologies:
    try:
      tpu_compile.parse_topology(topology)
    except tpu_compile.TopologyError as err:
      sys.exit(str(err))
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  if not FLAGS.table_only:
    if not tpu_compile.libtpu_installed():
      sys.exit("the TPU compiler needs libtpu: pip install -e .[tpu]")
    pairs = ([(s, t) for t in FLAGS.topologies for s in FLAGS.sizes] if FLAGS.order == "topology"
             else [(s, t) for s in FLAGS.sizes for t in FLAGS.topologies])
    compilers = ("tpu", "cpu") + (("tpu_xla",) if FLAGS.attention_xla else ())
    jobs = [(s, t, c) for s, t in pairs for c in compilers]
    with concurrent.futures.ThreadPoolExecutor(max_workers=FLAGS.jobs) as pool:
      list(pool.map(lambda j: run_job(out, *j, FLAGS.timeout), jobs))
  text = markdown(table_rows(load_records(out)), cpu_model())
  print(text)
  if FLAGS.markdown:
    pathlib.Path(FLAGS.markdown).write_text(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
