r"""Per-block probes of blockwise vs end-to-end training (the blockwise paper's depth-wise table).

  .venv/bin/python bench/blockwise_probe.py --out=/tmp/bw_probe.json

Trains configs/blockwise_tiny.py in each regime in-process (layerlock_jax.train.run, the normal
train loop), then measures every block's output with the evaluation library unchanged
(evaluation.depthwise.evaluate_params: mean-pooled linear probes fit on the train split and scored
on the test split, leave-one-out cosine retrieval, linear CKA, token cosine similarity), on held-out
drifting gratings (the twin's training data) and, for transfer, on Moving-MNIST clips of the
same size.
An untrained encoder ("init") is measured too, as the floor every number should rise above.

The paper's expectations (papers.md §6.5): blockwise close to end-to-end; decodability rising
earlier in depth under blockwise training; high CKA between consecutive late blocks.
Prints one markdown table per probe data set; --out also saves every number as JSON.
"""
import argparse
import json
import logging
import os
import pathlib
import shutil
import time

import flax.linen as nn
import jax
import numpy as np

from layerlock_jax.config import loading as config_loading
from layerlock_jax.evaluation import depthwise
from layerlock_jax.models import video_mae
from layerlock_jax import train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config(regime: str, steps: int):
  config = config_loading.load_config(f"{ROOT / 'configs' / 'blockwise_tiny.py'}:{regime}")
  if steps:
    config.total_steps = steps
  config.checkpoint_every = 0  # the final checkpoint is enough
  return config


def loss_curve(workdir: str, num_segments: int) -> dict[str, tuple[float, float]]:
  """(first logged, last logged) value of every segment loss in metrics.jsonl."""
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  out = {}
  for j in range(1, num_segments + 1):
    values = [r[f"segment_{j}_loss"] for r in records if f"segment_{j}_loss" in r]
    out[f"segment_{j}"] = (values[0], values[-1]) if values else (float("nan"),) * 2
  return out


def summarise(result: dict, bounds: tuple[int, ...]) -> list[dict]:
  """One row per block (its output = depth b_j), plus the embedding as block 0."""
  rows = []
  prev = 0
  for j, depth in enumerate((0,) + bounds):
    row = result["rows"][depth]
    entry = {"block": j, "depth": depth, "linear_mean": row["linear/mean"],
             "token_cos": row.get("token_cosine_similarity", float("nan"))}
    for name, task in result["tasks"].items():
      entry[f"linear/{name}"] = task["linear"][depth]
      entry[f"mAP/{name}"] = task["knn_mAP"][depth]
    # CKA between consecutive BLOCK outputs (depth b_{j-1} -> b_j), pooled test features.
    entry["cka_prev"] = result["linear_cka"][prev][depth] if j else float("nan")
    prev = depth
    rows.append(entry)
  return rows


def markdown(tables: dict[str, list[dict]], source: str, tasks: list[str]) -> str:
  names = list(tables)
  head = ["block (depth)"]
  for name in names:
    head += [f"{name} lin", f"{name} mAP", f"{name} CKA", f"{name} cos"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for i, row in enumerate(tables[names[0]]):
    cells = [f"{row['block']} ({row['depth']})"]
    for name in names:
      r = tables[name][i]
      mean_map = np.mean([r[f"mAP/{t}"] for t in tasks])
      cells += [f"{r['linear_mean']:.3f}", f"{mean_map:.3f}", f"{r['cka_prev']:.3f}",
                f"{r['token_cos']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return (f"{source}: lin = linear-probe accuracy (mean over {', '.join(tasks)}), mAP = retrieval "
          f"mAP (mean over the same labels), CKA = linear CKA with the previous block's output, "
          f"cos = mean token cosine similarity\n" + "\n".join(lines))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--regimes", default="concurrent,e2e", help="comma-separated regimes")
  parser.add_argument("--steps", type=int, default=0, help="train steps (0: the config's)")
  parser.add_argument("--num_train", type=int, default=512)
  parser.add_argument("--num_test", type=int, default=512)
  parser.add_argument("--sources", default="gratings,moving_mnist")
  parser.add_argument("--workdir", default="/tmp/blockwise_probe")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  logging.getLogger().setLevel(logging.WARNING)

  regimes = args.regimes.split(",")
  sources = args.sources.split(",")
  states, curves, seconds = {}, {}, {}
  base = load_config(regimes[0], args.steps)
  model = video_mae.VideoMAE(base)
  bounds = model.boundaries
  states["init"] = nn.unbox(model.init(jax.random.key(base.seed)))
  for regime in regimes:
    config = load_config(regime, args.steps)
    workdir = os.path.join(args.workdir, regime)
    shutil.rmtree(workdir, ignore_errors=True)  # train.run would resume an old run's checkpoint
    start = time.perf_counter()
    result = train.run(config, workdir)
    seconds[regime] = time.perf_counter() - start
    states[regime] = result.state
    curves[regime] = loss_curve(workdir, len(bounds))
    print(f"{regime}: trained {config.total_steps} steps in {seconds[regime]:.0f}s; block losses "
          "first -> last logged: " + ", ".join(f"{k} {a:.3f} -> {b:.3f}"
                                               for k, (a, b) in curves[regime].items()),
          flush=True)

  report = {"boundaries": bounds, "loss_curves": curves, "train_seconds": seconds, "tables": {}}
  for source in sources:
    data = depthwise.load_eval_data(base, num_train=args.num_train, num_test=args.num_test,
                                    task_source=source)
    tables = {}
    for name, params in states.items():
      result = depthwise.evaluate_params(base, params, data=data, attentive_blocks=())
      tables[name] = summarise(result, bounds)
    report["tables"][source] = tables
    print("\n" + markdown(tables, source, sorted(data.num_classes)), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
  main()
