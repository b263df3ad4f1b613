"""Issue 3's acceptance check: every parameter of a frozen block is bit-identical from the checkpoint
at which it froze to the last checkpoint of a LayerLock run.

  python -m layerlock_jax.main --config=configs/layerlock_tiny.py --workdir=/tmp/layerlock_tiny
  python bench/frozen_check.py --config=configs/layerlock_tiny.py --workdir=/tmp/layerlock_tiny

For each earlier checkpoint, the blocks frozen from that step on (the schedule's stage at the saved
step: a checkpoint written at a stage boundary holds the parameters at the moment they freeze) and
the patch embedding are compared element by element with the last checkpoint.
"""
import os

from absl import flags
import jax
import numpy as np
from ml_collections import config_flags
from layerlock_jax import cli
from layerlock_jax.trainer import Trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")


def main(_):
  config = _CONFIG.value
  trainer = Trainer(config, jax.devices()[:1])
  directory = os.path.join(_WORKDIR.value, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit())
  last = trainer.restore(os.path.join(directory, str(steps[-1])))
  last_full = jax.device_get(last.state.full_params())
  print(f"last checkpoint: step {last.step}, {last.spec.frozen_layers} frozen blocks")
  ok = True
  for step in steps[:-1]:
    # The blocks frozen from this step on: the schedule's stage at `step` (a checkpoint written at
    # a boundary holds the parameters at the moment they freeze).
    k = trainer.spec_at(step).frozen_layers
    if k == 0:
      print(f"step {step}: nothing frozen yet")
      continue
    earlier = trainer.restore(os.path.join(directory, str(step)))
    full = jax.device_get(earlier.state.full_params())
    same_blocks = all(np.array_equal(np.asarray(a)[:k], np.asarray(b)[:k]) for a, b in zip(
        jax.tree.leaves(full["encoder"]), jax.tree.leaves(last_full["encoder"]), strict=True))
    same_embed = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves(full["embed"]), jax.tree.leaves(last_full["embed"]), strict=True))
    moved = not all(np.array_equal(np.asarray(a)[k:], np.asarray(b)[k:]) for a, b in zip(
        jax.tree.leaves(full["encoder"]), jax.tree.leaves(last_full["encoder"]), strict=True))
    print(f"step {step} -> {last.step}: blocks 1..{k} bit-identical: {same_blocks}; embedding "
          f"bit-identical: {same_embed}; later blocks changed: {moved}")
    ok &= same_blocks and same_embed
  print("FROZEN MEANS FROZEN" if ok else "MISMATCH")


if __name__ == "__main__":
  cli.run(main)
