"""Divergence guard: stop a run whose loss went non-finite, without a host sync per step.

In the compiled step (train_step.py): metrics["nonfinite"] is 1.0 when the loss or the gradient
norm is NaN/inf. With config.skip_nonfinite_updates = K > 0 the step also keeps the previous
parameters and optimizer state on such a step (`keep_if`), as large runs do to ride out rare spikes.

On the host, `Guard.observe` folds each step's flag into two replicated device scalars (bad steps so
far, the step at which the count first exceeded K) with a tiny jitted op: it is dispatched
asynchronously like the step, so nothing waits for the device. `Guard.stopped_at` reads them (one
scalar transfer) where the loop syncs anyway: at log boundaries, and before every checkpoint save,
where `state_is_finite` also checks every array of the state. A run that diverged therefore stops
at the next log boundary or save, whichever comes first, and never writes non-finite values into
(or over) a checkpoint.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteError(RuntimeError):
  """The run diverged; the message is the one line the entry point prints."""

  def __init__(self, step: int, last_good: int | None, directory: str, what: str = "loss"):
    self.step, self.last_good, self.directory = step, last_good, directory
    good = f"step {last_good}" if last_good is not None else "none"
    super().__init__(f"Non-finite {what} at step {step}; last good checkpoint: {good} in "
                     f"{directory}")


def keep_if(ok, new, old):
  """`new` where the scalar `ok` holds, else `old`, leaf by leaf (inside the compiled step)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


@jax.jit
def _fold(count, stop, flag, step, limit):
  count = count + (flag > 0).astype(jnp.int32)
  stop = jnp.where((stop < 0) & (count > limit), step, stop)
  return count, stop


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def state_is_finite(state) -> bool:
  """Every floating-point array of `state` finite? (One reduction; a host sync.)"""
  return bool(jax.device_get(_all_finite(state)))


class Guard:
  """Counts non-finite steps on device; `skip_limit` of them are tolerated (skipped updates)."""

  def __init__(self, skip_limit: int, replicated: jax.sharding.Sharding):
    scalar = lambda v: jax.make_array_from_callback((), replicated, lambda _: np.int32(v))
    self.skip_limit = int(skip_limit)
    self._count, self._stop = scalar(0), scalar(-1)
    self._limit = scalar(self.skip_limit)

  def observe(self, metrics: dict, done: int):
    """Fold in the flag of the step that ended with `done` steps taken (asynchronous)."""
    self._count, self._stop = _fold(self._count, self._stop, metrics["nonfinite"],
                                    np.int32(done), self._limit)

  def stopped_at(self) -> int | None:
    """The step at which more than `skip_limit` steps had gone non-finite, or None."""
    stop = int(jax.device_get(self._stop))
    return stop if stop >= 0 else None

  def skipped(self) -> int:
    """Non-finite steps so far (with skipping on: updates skipped)."""
    return int(jax.device_get(self._count))
