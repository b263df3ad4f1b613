"""Checkpoints: asynchronous Orbax saves, resume (also onto another mesh), init_from, preemption.

Layout: `<workdir>/checkpoints/<step>/` holds three items, written by one Orbax CheckpointManager:
  state/      the whole TrainState (trainable + frozen parameters, optimizer state, step, and
              V-JEPA's EMA teacher when there is one)
  data_iter/  the grain iterator position, one small JSON file per process
  meta/       JSON: the freeze stage the state is split for, progress (train time, clips seen), the
              shape-determining config fields, the full config (for humans), the process count.
Nothing else is needed to continue bit-exactly: the mask RNG is fold_in(seed, step) and the LR a
function of the step, so RNG state is never saved. The state's `seed` leaf is config.seed: it is
left out of `state/` (TrainState.checkpointed) and set from the config on restore.

Atomicity comes from Orbax: a step is written into `<step>.orbax-checkpoint-tmp-*` and renamed to
`<step>` only once every item is complete, so a save killed at any point leaves no `<step>` directory
and is never restored (leftover temporary directories are deleted when the manager starts).

The state's tree depends on the stage (state.py: blocks move between `params` and `frozen`), so the
stage is saved in `meta` and the restore target is `abstract_state(saved_spec)` (the caller's:
train.run passes `Trainer.abstract_state`),
whose leaves carry the CURRENT mesh's shardings: Orbax reads every shard it needs, which is what
makes a checkpoint written on one device count / mesh shape resume on another.

Restore checks, cheapest first, before anything is compiled or overwritten:
  1. meta readable?                      no  -> corrupt: warn, move aside, try the previous step
  2. shape-determining fields equal?     no  -> IncompatibleCheckpointError naming the fields
  3. saved tree (Orbax metadata, no array data) == target paths/shapes/dtypes?  no -> Incompatible
  4. arrays readable?                    no  -> corrupt: warn, move aside, try the previous step
Moving a corrupt step aside (to `checkpoints.corrupt/`) instead of skipping it in place matters:
Orbax refuses to save a step <= its latest step, so a corrupt step 800 left in place would silently
swallow the new save of step 800. If checkpoints exist but none restores, that is an error, never
a silent restart from scratch over the user's run.

Nothing here unpickles: Orbax stores arrays with tensorstore plus JSON metadata, grain state is JSON.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from typing import Optional
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from layerlock_jax.methods import vjepa
from layerlock_jax import plan
from layerlock_jax import state as state_lib

CHECKPOINTS = "checkpoints"
CORRUPT = "checkpoints.corrupt"
# 2: the data iterator's position counts global batches (format 1 counted records, which resumes
# at another position under the current pipeline).
FORMAT = 2

# Config fields that decide parameter / optimizer-state shapes: a checkpoint written with other values
# cannot be restored into this model. Listed (not derived) so the error can name them.
SHAPE_FIELDS = (
    "model.width", "model.depth", "model.mlp_dim", "model.num_heads", "model.patch_size",
    "model.posemb", "model.decoder.type", "model.decoder.width", "model.decoder.depth",
    "model.decoder.num_heads", "model.decoder.mlp_dim", "data.num_frames", "data.image_size",
    "layerlock.multi_target")
# Fields that may change on resume but then break bit-exact continuation (data order, masks).
EXACTNESS_FIELDS = ("seed", "batch_size", "data.source", "data.num_clips", "data.num_workers",
                    "data.sources", "grad_accum_steps")


class IncompatibleCheckpointError(ValueError):
  """The workdir's checkpoint belongs to a different model; nothing was changed."""


class CorruptCheckpointError(RuntimeError):
  """Checkpoints exist, but none of them can be read."""


class CheckpointWriteError(RuntimeError):
  """Writing a checkpoint failed (disk full, unwritable, ...); the complete ones are untouched."""


@dataclasses.dataclass
class Progress:
  """Accounting that must survive restarts (throughput, ETA)."""
  train_seconds: float = 0.0   # wall time spent in training steps, without compiles and restarts
  clips_seen: int = 0          # global clips consumed
  # Convergence-triggered freezing (freeze_trigger.TriggerState as JSON): the decided freeze events
  # and the trigger's running state, so a resumed run decides exactly as an uninterrupted one.
  trigger: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Restored:
  step: int
  state: state_lib.TrainState
  spec: plan.StageSpec     # the stage `state` is split for (maybe not the schedule's at `step`)
  progress: Progress
  meta: dict


def get_field(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def plain(value):
  """Config values as JSON-comparable values (tuples and lists compare equal after a round trip)."""
  return list(value) if isinstance(value, (tuple, list)) else value


def shape_fields(config) -> dict:
  fields = {name: plain(get_field(config, name)) for name in SHAPE_FIELDS}
  # Derived: multi_target makes one latent head per freezable block, and grad clipping adds an
  # optimizer-state entry; both change the saved tree without a dimension field changing.
  fields["latent_heads"] = plan.num_latent_heads(config)
  fields["optimizer.grad_clip>0"] = bool(config.optimizer.grad_clip > 0)
  if vjepa.enabled(config):  # only then: checkpoints of other objectives keep their fields
    vp = config.vjepa.predictor
    fields["vjepa.predictor"] = [vp.width, vp.depth, vp.num_heads, vp.mlp_dim]
    fields["vjepa.ema"] = bool(config.vjepa.ema)
  return fields


def diff_fields(saved: dict, current: dict) -> list[str]:
  return [f"{k}: checkpoint {saved.get(k)!r} != config {current.get(k)!r}"
          for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def _key_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def _leaf_shapes(tree) -> dict:
  """path -> (shape, dtype) for every array-like leaf; works on Orbax metadata and abstract trees."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {_key_str(p): (tuple(x.shape), str(jnp.dtype(x.dtype))) for p, x in flat
          if hasattr(x, "shape")}


def tree_mismatch(saved_tree, target) -> list[str]:
  saved, want = _leaf_shapes(saved_tree), _leaf_shapes(target)
  out = [f"{p}: missing in checkpoint" for p in sorted(set(want) - set(saved))]
  out += [f"{p}: in checkpoint only" for p in sorted(set(saved) - set(want))]
  out += [f"{p}: checkpoint {saved[p]} != model {want[p]}" for p in sorted(set(saved) & set(want))
          if saved[p] != want[p]]
  return out


def with_seed(saved: dict, target: state_lib.TrainState, config) -> state_lib.TrainState:
  """The restored fields (TrainState.checkpointed) as the target's TrainState, with the seed leaf
  that is never saved: config.seed, placed like the target's (every process gives the same)."""
  seed = jax.make_array_from_callback((), target.seed.sharding,
                                      lambda _: np.asarray(config.seed, np.uint32))
  return target.replace(**saved, seed=seed)


def _brief(err: Exception) -> str:
  text = str(err).splitlines()[0] if str(err) else ""
  return f"{type(err).__name__}: {text[:300]}"


def _progress(meta: dict) -> Progress:
  known = {f.name for f in dataclasses.fields(Progress)}
  return Progress(**{k: v for k, v in meta["progress"].items() if k in known})


def spec_from_meta(meta: dict, config) -> plan.StageSpec:
  """The saved StageSpec. JSON turned its tuples into lists; they must be tuples again, or the spec
  would be unhashable (it keys the compiled-step cache) and unequal to the schedule's. Checkpoints
  written before StageSpec had `method` get the method of `config` (the same run's)."""
  known = {f.name for f in dataclasses.fields(plan.StageSpec)}
  saved = dict(meta["stage"])
  saved.setdefault("method", plan.method_name(config))
  unknown = sorted(set(saved) - known)
  if unknown:
    raise IncompatibleCheckpointError(
        f"the checkpoint's stage has fields this code does not know: {unknown} (written by a "
        "different version of this code?)")
  return plan.StageSpec(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in saved.items()})


def _quiet_orbax(record) -> bool:
  """Hide Orbax's per-save INFO chatter (dozens of lines per checkpoint) and its warnings that a
  read-only manager (used on purpose to inspect checkpoints) is read-only; other warnings show.

  Orbax logs through absl's logger, our code through the root logger, so only Orbax is filtered.
  """
  if "/orbax/" not in record.pathname:
    return True
  if record.levelno < logging.WARNING:
    return False
  return not str(record.msg).startswith(("Given directory is read only",
                                         "CheckpointManagerOptions.read_only=True"))


def open_manager(directory: str, config=None, *, read_only: bool = False) -> ocp.CheckpointManager:
  logging.getLogger("absl").addFilter(_quiet_orbax)  # idempotent: same function object
  keep = ocp.checkpoint_managers
  policies = [keep.LatestN(n=int(config.keep_checkpoints) if config else 1)]
  if config and config.keep_every > 0:
    policies.append(keep.EveryNSteps(interval_steps=int(config.keep_every)))
  options = ocp.CheckpointManagerOptions(
      # The train loop decides when to save (checkpoint_every, end, preemption).
      save_interval_steps=0 if read_only else 1,
      preservation_policy=keep.AnyPreservationPolicy(policies),
      cleanup_tmp_directories=not read_only,  # remnants of saves that were killed midway
      enable_async_checkpointing=True, read_only=read_only, create=not read_only)
  # Handlers named up front (not inferred from the first save), so a fresh manager can read the
  # metadata of existing steps before anything is saved or restored.
  handlers = {"state": ocp.StandardCheckpointHandler(),
              "data_iter": grain.checkpoint.CheckpointHandler(),
              "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class Checkpoints:
  """The checkpoints of one workdir: save every N steps asynchronously, restore the latest."""

  def __init__(self, directory: str, config, *, read_only: bool = False):
    self.config = config
    self.directory = os.path.abspath(directory)
    self.manager = open_manager(self.directory, None if read_only else config, read_only=read_only)
    self._started: Optional[int] = None  # the newest step whose save was started

  @classmethod
  def in_workdir(cls, workdir: str, config) -> "Checkpoints":
    return cls(os.path.join(workdir, CHECKPOINTS), config)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  # --- save --------------------------------------------------------------------------------------
  def save(self, step: int, state, spec: plan.StageSpec, data_iter, progress: Progress, *,
           wait: bool = False, extra_meta: Optional[dict] = None) -> bool:
    """Start saving `state` (split for `spec`) after `step` steps; returns False if it exists.

    Orbax copies the arrays to host memory before returning, so the caller may donate `state` to
    the next step right away; the writing happens in a background thread.
    """
    meta = {"format": FORMAT, "step": int(step), "stage": dataclasses.asdict(spec),
            "progress": dataclasses.asdict(progress), "shape_fields": shape_fields(self.config),
            "exactness_fields": {k: plain(get_field(self.config, k)) for k in EXACTNESS_FIELDS},
            "process_count": jax.process_count(),
            "config": json.loads(self.config.to_json_best_effort()), **(extra_meta or {})}
    self._started = step
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state.checkpointed()),
          data_iter=grain.checkpoint.CheckpointSave(data_iter), meta=ocp.args.JsonSave(meta)))
      if wait:
        self.manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      raise self._write_error(step, err) from err
    return saved

  def close(self):
    """Finish pending writes (every process must call it: the final commit is collective)."""
    try:
      self.manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      raise self._write_error(self._started, err) from err
    finally:
      self.manager.close()

  def last_complete_step(self) -> Optional[int]:
    """The newest step whose directory is complete on disk (Orbax renames a step's temporary
    directory to `<step>` only once every item is written), after pending writes finished."""
    try:
      self.manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except
      pass  # a failed write leaves no `<step>` directory: what is on disk is still the answer
    steps = [int(n) for n in os.listdir(self.directory) if n.isdigit()] if os.path.isdir(
        self.directory) else []
    return max(steps) if steps else None

  def _write_error(self, step: Optional[int], err: Exception) -> CheckpointWriteError:
    """Asynchronous writes report failures at the next save or wait, so the step that failed
    may be an earlier one than `step`; what matters to the user is what is intact."""
    last = self.last_complete_step()
    during = f" (saving step {step})" if step is not None else ""
    try:
      free = f"{shutil.disk_usage(self.directory).free / 2**30:.1f} GiB free there"
    except OSError:
      free = "free space unknown"
    return CheckpointWriteError(
        f"writing a checkpoint to {self.directory} failed{during}: {_brief(err)} ({free}); the "
        f"last complete checkpoint is {'step ' + str(last) if last is not None else 'none'}, "
        "untouched (check free space and permissions, then rerun to resume from it)")

  # --- restore -----------------------------------------------------------------------------------
  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def check_compatible(self, step: int, meta: dict, abstract_state) -> plan.StageSpec:
    """Raise IncompatibleCheckpointError unless `step` restores into `abstract_state(spec)` (the
    saved stage's train state, as ShapeDtypeStructs with the current run's shardings)."""
    problems = diff_fields(meta["shape_fields"], shape_fields(self.config))
    spec = spec_from_meta(meta, self.config)
    if not problems:
      saved_tree = self.manager.item_metadata(step)["state"]
      problems = tree_mismatch(saved_tree, abstract_state(spec).checkpointed())
    if problems:
      raise IncompatibleCheckpointError(
          f"{self.directory}/{step} was written for a different model; refusing to resume (nothing "
          "was changed). Mismatched: " + "; ".join(problems[:12])
          + ". Use a new --workdir, or --config.init_from=<this checkpoint> to start from its "
          "parameters if only non-shape fields differ.")
    saved = meta.get("exactness_fields", {})  # fields added later are absent from old checkpoints
    changed = diff_fields(saved, {k: plain(get_field(self.config, k)) for k in EXACTNESS_FIELDS
                            if k in saved})
    if changed:
      logging.warning("resuming with changed fields (continuation will not be bit-exact): %s",
                      "; ".join(changed))
    return spec

  def check_resumable(self, step: int, meta: dict):
    """A resume also continues the data order: the data position must be in this code's format."""
    if int(meta.get("format", 1)) != FORMAT:
      raise IncompatibleCheckpointError(
          f"{self.directory}/{step} has checkpoint format {meta.get('format', 1)}, this code "
          f"writes format {FORMAT} (the data position is stored differently), so a resume would "
          "not continue its data order; refusing to resume (nothing was changed). Resume it with "
          "the version that wrote it, or start from its parameters with "
          "--config.init_from=<this checkpoint> and a new --workdir.")

  def restore_latest(self, abstract_state, data_iter) -> Optional[Restored]:
    """Restore the newest readable checkpoint (sets `data_iter`'s position); None if there is none.
    `abstract_state(spec)`: the restore target of a stage (see check_compatible).

    An incompatible checkpoint raises before any array is read; an unreadable one is moved aside
    with a warning and the previous one is tried.
    """
    found = self.steps()
    for step in reversed(found):
      try:
        meta = self.read_meta(step)
        self.check_resumable(step, meta)
        spec = self.check_compatible(step, meta, abstract_state)
        state = self._restore_arrays(step, abstract_state(spec), data_iter, meta)
      except IncompatibleCheckpointError:
        raise  # another model: older steps are no better, and the user must decide
      except Exception as err:  # pylint: disable=broad-except
        self._set_aside(step, _brief(err))  # unreadable meta, tree metadata or arrays
        continue
      logging.info("restored checkpoint %s/%d (stage k=%d, %s)", self.directory, step,
                   spec.frozen_layers, spec.target)
      return Restored(step, state, spec, _progress(meta), meta)
    if found:
      raise CorruptCheckpointError(
          f"none of the checkpoints {found} in {self.directory} could be read (moved to "
          f"{CORRUPT}/); refusing to start from scratch over them. Move {self.directory} away "
          "to start a new run in this workdir.")
    return None

  def _restore_arrays(self, step, target, data_iter, meta):
    count = jax.process_count()
    saved_count = int(meta.get("process_count", count))
    args = {"state": ocp.args.StandardRestore(target.checkpointed())}
    if saved_count == count:
      args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    if saved_count != count:
      data_iter.set_state(redeal_data_state(self._data_dir(step), saved_count, count))
    return with_seed(restored.state, target, self.config)

  def _data_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step), "data_iter")

  def _set_aside(self, step: int, why: str):
    logging.warning("skipping checkpoint %s/%d: %s; moving it to %s/ and trying the previous one",
                    self.directory, step, why, CORRUPT)
    if jax.process_index() == 0:
      dest = os.path.join(os.path.dirname(self.directory), CORRUPT, f"{step}-{int(time.time())}")
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"layerlock_set_aside_{step}")
    self.manager.reload()


def redeal_data_state(data_dir: str, saved_count: int, count: int) -> dict:
  """Data position for a different process count (e.g. resuming on more hosts).

  data/pipeline.py deals one global shuffled stream to processes in contiguous per-step blocks and
  forms batches before anything else reads them: process p's batch b is its block of global batch
  b, whatever the process count. So at a step boundary every process has read the same number of
  batches, and a grain state {"next_index": n} means "n global steps consumed" on any process
  count. Any other state shape (e.g. with worker processes) cannot be translated and is refused.
  """
  with open(os.path.join(data_dir, f"process_0-of-{saved_count}.json")) as f:
    saved = json.load(f)
  if set(saved) != {"next_index"}:
    raise IncompatibleCheckpointError(
        f"checkpoint written by {saved_count} processes, resumed by {count}: the data iterator "
        f"state {saved} cannot be re-dealt (fields: process_count)")
  return {"next_index": int(saved["next_index"])}


# --- reading a checkpoint outside the resume path --------------------------------------------------
def resolve(path: str) -> tuple[str, int]:
  """(checkpoints dir, step) for a workdir, a checkpoints dir or a step dir (latest if not given)."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, "meta")) and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(os.path.basename(path))
  if os.path.isdir(os.path.join(path, CHECKPOINTS)):
    path = os.path.join(path, CHECKPOINTS)
  steps = []
  if os.path.isdir(path):
    manager = open_manager(path, read_only=True)
    steps = manager.all_steps()
    manager.close()
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint under {path}")
  return path, max(steps)


def restore(path: str, config, abstract_state, data_iter=None) -> Restored:
  """Restore the train state of a checkpoint (workdir / checkpoints dir / step dir) for `config`
  into `abstract_state(saved_spec)` (its shardings say where each array goes), e.g. for evaluation
  or tests. The stage is the saved one."""
  directory, step = resolve(path)
  ckpts = Checkpoints(directory, config, read_only=True)
  meta = ckpts.read_meta(step)
  spec = ckpts.check_compatible(step, meta, abstract_state)
  target = abstract_state(spec)
  args = {"state": ocp.args.StandardRestore(target.checkpointed())}
  if data_iter is not None:
    ckpts.check_resumable(step, meta)
    args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
  state = with_seed(ckpts.manager.restore(step, args=ocp.args.Composite(**args)).state, target,
                    config)
  ckpts.manager.close()
  return Restored(step, state, spec, _progress(meta), meta)


# --- preemption ------------------------------------------------------------------------------------
class Preemption:
  """Has the job been asked to stop? SIGTERM (single process) or JAX's preemption sync point.

  With several processes the signal is left to JAX's preemption service (installed by
  jax.distributed.initialize): a Python handler would replace it, and hosts that each noticed
  SIGTERM at a different step would save different steps and hang in the collective save.
  `reached_preemption_sync_point` makes every host agree on one step.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager
    self.signalled: Optional[int] = None
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    self.signalled = signum
    logging.warning("received signal %d: checkpointing after the current step, then exiting",
                    signum)

  def reached(self, step: int) -> bool:
    # Called once per step on every process: the sync point protocol needs every host to ask.
    return self.manager.reached_preemption(step) or self.signalled is not None

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def main(argv):
  """`python -m layerlock_jax.checkpoint WORKDIR`: list the checkpoints and what they hold."""
  if len(argv) != 2 or argv[1] in ("-h", "--help"):
    print(main.__doc__)
    return 0 if len(argv) == 2 else 2
  directory, _ = resolve(argv[1])
  manager = open_manager(directory, read_only=True)
  for step in sorted(manager.all_steps()):
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    progress = meta["progress"]
    print(f"step {step}: stage k={meta['stage']['frozen_layers']} ({meta['stage']['target']}), "
          f"{progress['clips_seen']} clips, {progress['train_seconds']:.1f}s training, "
          f"{meta['process_count']} process(es); {epath.Path(directory) / str(step)}")
  manager.close()

