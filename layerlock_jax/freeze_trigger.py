"""Convergence-triggered freezing: freeze the next block once its parameter norm has plateaued.

The LayerLock paper starts freezing "when the parameter norms of the first layers plateau" and picks
its intervals by hand. `config.layerlock.trigger = "convergence"` makes that heuristic automatic:
every `check_every` steps the train loop hands this module the per-layer parameter norms of the
trainable encoder stack; the signal is the relative change of the norm of the next `jump` blocks
(the ones the next freeze would take) since the previous check, per step,

    signal = | ||theta_t|| - ||theta_{t - n}|| | / (||theta_{t - n}|| * n),   n = check_every,

so that a threshold does not depend on how often it is checked. It does depend on the learning rate
(a block moves less as the cosine decays), which is why min_interval / max_interval bound it.

When it stays below `threshold` for `patience` consecutive checks, and at least `min_interval` steps
have passed since the previous freeze (for the first freeze: `layerlock.pixel_steps`), the blocks
freeze from the next step on. `max_interval` (> 0) forces a freeze that many steps after the previous
one whatever the signal says, so a block that never settles cannot stall the schedule. Freezing stops
at the frozen-block cap and never starts a stage at or after `total_steps`.

Determinism: the norms come from the replicated metrics of the compiled step, so every process sees
the same values. Different device counts may sum the squares in a different order; the signal is
rounded to SIGNAL_DIGITS significant digits before it is compared, which makes a decision flip only
if the signal lands within that rounding of the threshold.

The decisions are the schedule: `plan.freeze_table(config, depth, decided=events)` turns them
into the same table an explicit schedule would give. The trigger's whole state (events, the last
norm, the calm-check count) is plain JSON, saved with every checkpoint, so a resumed run replays the
same decisions exactly. This module is pure Python (no JAX).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

SIGNAL_DIGITS = 4


@dataclasses.dataclass
class TriggerState:
  """Everything a resumed run needs to continue deciding exactly as an uninterrupted one."""
  events: list = dataclasses.field(default_factory=list)  # [[step, k], ...] decided so far
  last_norm: Optional[float] = None  # candidate blocks' norm at the previous check (None: no check
                                     # since the last freeze)
  calm_checks: int = 0               # consecutive checks with signal < threshold
  last_signal: Optional[float] = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Optional[dict]) -> "TriggerState":
    if not data:
      return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    state = cls(**{k: v for k, v in data.items() if k in known})
    state.events = [[int(s), int(k)] for s, k in state.events]
    return state


def _round(x: float) -> float:
  if x == 0.0 or not math.isfinite(x):
    return x
  return round(x, SIGNAL_DIGITS - 1 - int(math.floor(math.log10(abs(x)))))


class ConvergenceTrigger:
  """Decides freeze events from the candidate blocks' parameter norms (see the module docstring)."""

  def __init__(self, config, frozen_cap: int, state: Optional[TriggerState] = None):
    ll, conv = config.layerlock, config.layerlock.convergence
    self.check_every = int(conv.check_every)
    self.threshold = float(conv.threshold)
    self.patience = int(conv.patience)
    self.min_interval = int(conv.min_interval)
    self.max_interval = int(conv.max_interval)
    self.pixel_steps = int(ll.pixel_steps)
    self.jump = int(ll.jump)
    self.cap = int(frozen_cap)
    self.total_steps = int(config.total_steps)
    self.state = state or TriggerState()

  @property
  def events(self) -> list:
    return self.state.events

  def frozen_layers(self) -> int:
    return self.state.events[-1][1] if self.state.events else 0

  def due(self, done: int) -> bool:
    """Whether the loop should hand over norms after `done` steps."""
    return (done % self.check_every == 0 and self.frozen_layers() < self.cap
            and done < self.total_steps)

  def observe(self, done: int, layer_norms: Sequence[float]) -> Optional[tuple[int, int]]:
    """Norms of the trainable encoder blocks (in depth order) after `done` steps -> a new event
    (step, k) if the next blocks freeze from step `done` on, else None."""
    st = self.state
    k = self.frozen_layers()
    candidate = math.sqrt(sum(float(n) ** 2 for n in layer_norms[:self.jump]))
    signal = None
    if st.last_norm is not None and st.last_norm > 0:
      signal = _round(abs(candidate - st.last_norm) / (st.last_norm * self.check_every))
    st.last_norm, st.last_signal = candidate, signal
    st.calm_checks = st.calm_checks + 1 if signal is not None and signal < self.threshold else 0
    previous = st.events[-1][0] if st.events else 0
    earliest = previous + self.min_interval if st.events else max(self.pixel_steps, 1)
    forced = self.max_interval > 0 and done >= max(previous + self.max_interval, earliest)
    if done < earliest or not (forced or st.calm_checks >= self.patience):
      return None
    event = (int(done), min(k + self.jump, self.cap))
    st.events.append(list(event))
    st.last_norm, st.calm_checks = None, 0  # a new candidate: its history starts now
    return event
