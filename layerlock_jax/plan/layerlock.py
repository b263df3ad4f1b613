"""LayerLock's freeze table: when each leading encoder block freezes, and what is predicted then.

Stages. A stage is identified by k, the number of frozen *leading* encoder blocks. Stage 0 is the
pixel stage: nothing is frozen and the target is pixels. For k >= 1 the target is the output of the
k-th block (1-based), named ``"block_{k}"``, when ``config.layerlock.target == "latent"``
(LayerLock). With ``target == "pixel"`` (progressive freezing with the MAE pixel target only, the
accelerated-MAE baseline) the target stays ``"pixels"`` in every stage.

Cap. K_max = ``config.layerlock.max_frozen`` when it is >= 0, else
floor(``max_frozen_fraction`` * encoder_depth). It is clipped to encoder_depth - 1, because at least
one block has to remain trainable for there to be anything left to learn. A decoder that borrows
the last backbone blocks (4DS "query" decoder) shortens the encoder that can be frozen. The
validator is stricter than the clip: a config whose cap it would clip, or that caps at 0, is
rejected before the run starts (`check_layerlock`).

Rule-based schedule (``config.layerlock.explicit`` empty). The first freeze event happens at
``pixel_steps`` (``first_freeze == "end_of_pixel"``) or at ``pixel_steps + interval``
(``"one_interval_later"``); the paper (arXiv 2509.10156) can be read either way, so both are
offered. Every further ``interval`` steps another event follows. Each event freezes ``jump`` more
blocks, clipped to K_max, and the events stop once K_max is reached. For ViT-G (pixel 160K,
interval 10K, jump 1, 32 of 48) that gives 32 events, the last at 470K (end_of_pixel) or 480K
(one_interval_later).

Explicit schedule (``config.layerlock.explicit`` non-empty). A sequence of (step, k) pairs used as
given, without applying any rule: steps strictly increasing and >= 1 (step 0 belongs to the pixel
stage), k strictly increasing with 1 <= k <= K_max.

Convergence trigger (``config.layerlock.trigger == "convergence"``). The events are decided while
training (methods/layerlock.py); the table is the one an explicit schedule with the decided events
would give.

In every case, stages starting at or after ``config.total_steps`` are dropped: they would never
run, and dropping them keeps a run shortened with ``--config.total_steps`` valid. With
``config.layerlock.enabled == False`` the table is the single pixel stage.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from layerlock_jax.plan.fields import EPS, choice, fail, get, integer, is_int, is_seq, number
from layerlock_jax.plan import options
from layerlock_jax.plan.stages import PIXELS, Stage, block_target, encoder_depth, method_enabled


def _raw_cap(config: Any, depth: int) -> int:
  """K_max before the clip: max_frozen, or floor(fraction * depth)."""
  max_frozen = get(config, "layerlock.max_frozen")
  if max_frozen >= 0:
    return int(max_frozen)
  frac = number(config, "layerlock.max_frozen_fraction", 0, 1)
  # The epsilon protects against products such as 0.29 * 100 = 28.999999999999996, which a plain
  # floor would turn into 28 although the user meant 29.
  return math.floor(frac * depth + EPS)


def frozen_cap(config: Any, depth: int) -> int:
  """K_max: the most blocks that may ever be frozen (see the module docstring)."""
  if depth < 1:
    raise ValueError(f"encoder_depth must be >= 1, got {depth}")
  return min(_raw_cap(config, depth), depth - 1)


def first_event_step(config: Any) -> int:
  """Step of the rule-based schedule's first freeze event."""
  pixel_steps = integer(config, "layerlock.pixel_steps", lo=0)
  interval = integer(config, "layerlock.interval", lo=1)
  first = choice(config, "layerlock.first_freeze", options.FIRST_FREEZES)
  return pixel_steps + (interval if first == "one_interval_later" else 0)


def _rule_events(config: Any, cap: int) -> list[tuple[int, int]]:
  """(step, k) freeze events from the pixel_steps / interval / jump rule, not yet cut at total."""
  first = first_event_step(config)
  interval = get(config, "layerlock.interval")
  jump = integer(config, "layerlock.jump", lo=1)
  if cap > 0 and first < 1:
    # A freeze at step 0 would make the first latent target an untrained block's output.
    raise fail("layerlock.pixel_steps", get(config, "layerlock.pixel_steps"),
               "with first_freeze='end_of_pixel' freezes block 1 at step 0, before it has trained",
               "pass --config.layerlock.pixel_steps >= 1")
  events, k, step = [], 0, first
  while k < cap:
    k = min(k + jump, cap)
    events.append((int(step), int(k)))
    step += interval
  return events


def _explicit_events(pairs: Sequence, cap: int, field: str | None) -> list[tuple[int, int]]:
  """(step, k) pairs checked against the explicit-schedule rules. `field` names the config field
  they come from; None for events decided by the convergence trigger (an error is then a bug)."""
  prev = (0, 0)  # step 0 is the pixel stage; both step and k must rise from there
  for i, pair in enumerate(pairs):
    if (not is_seq(pair) or len(pair) != 2 or not all(is_int(x) for x in pair)
        or pair[0] <= prev[0] or not prev[1] < pair[1] <= cap):
      problem = (f"has entry {i} {pair!r}, but entries must be (step, frozen_blocks) pairs with "
                 f"steps >= 1 and both strictly increasing, frozen_blocks <= the cap {cap}")
      if field is None:
        raise ValueError(f"decided freeze events {tuple(pairs)} {problem}")
      raise fail(field, tuple(pairs), problem,
                 "pass e.g. --config.layerlock.explicit='((1000, 1), (2000, 2))'")
    prev = (int(pair[0]), int(pair[1]))
  return [(int(s), int(k)) for s, k in pairs]


def freeze_events(config: Any, cap: int, decided: Sequence = ()) -> list[tuple[int, int]]:
  """The (step, k) freeze events of a LayerLock run, before the cut at total_steps."""
  explicit = get(config, "layerlock.explicit")
  if choice(config, "layerlock.trigger", options.FREEZE_TRIGGERS) == "convergence":
    if explicit:
      raise fail("layerlock.explicit", tuple(explicit), "is a fixed freeze table, but "
                 "layerlock.trigger='convergence' decides the table while training",
                 "drop --config.layerlock.explicit or use --config.layerlock.trigger=schedule")
    return _explicit_events(decided, cap, None)
  if len(explicit) > 0:
    return _explicit_events(explicit, cap, "layerlock.explicit")
  return _rule_events(config, cap)


def layerlock_table(config: Any, depth: int, decided: Sequence = ()) -> tuple[Stage, ...]:
  """All stages of a LayerLock (or plain MAE) run, ordered by start step."""
  pixel_stage = Stage(start_step=0, frozen_layers=0, target=PIXELS)
  if not get(config, "layerlock.enabled"):
    return (pixel_stage,)
  target = choice(config, "layerlock.target", options.LAYERLOCK_TARGETS)
  cap = frozen_cap(config, depth)
  total = get(config, "total_steps")
  return (pixel_stage,) + tuple(
      Stage(step, k, PIXELS if target == "pixel" else block_target(k))
      for step, k in freeze_events(config, cap, decided) if step < total)


def check_layerlock(config: Any) -> None:
  """Everything a LayerLock config must satisfy before a run starts, first problem raised."""
  if not get(config, "layerlock.enabled"):
    return
  if method_enabled(config, "naive_latent"):
    raise fail("naive_latent.enabled", True, "together with layerlock.enabled=True mixes two "
               "latent objectives", "enable only one of --config.layerlock.enabled / "
               "--config.naive_latent.enabled")
  enc = encoder_depth(config)
  integer(config, "layerlock.pixel_steps", lo=0)
  integer(config, "layerlock.interval", lo=1)
  integer(config, "layerlock.jump", lo=1)
  first_step = first_event_step(config)
  target = choice(config, "layerlock.target", options.LAYERLOCK_TARGETS)
  choice(config, "layerlock.target_norm", options.TARGET_NORMS)
  choice(config, "layerlock.target_center", options.TARGET_CENTERS)
  number(config, "layerlock.latent_patch_fraction", 0, 1, lo_open=True)
  number(config, "layerlock.latent_loss_weight", 0)
  integer(config, "layerlock.mini_warmup_steps", lo=0)
  if target == "pixel" and not get(config, "layerlock.keep_pixel_loss"):
    raise fail("layerlock.keep_pixel_loss", False, "with layerlock.target='pixel' leaves no loss "
               "at all", "set --config.layerlock.keep_pixel_loss=True or use target='latent'")
  if enc < 2:
    raise fail("model.depth", get(config, "model.depth"), f"leaves an encoder of {enc} block(s) "
               "(query decoder blocks excluded), but LayerLock needs one block to freeze and one "
               "to train", "raise --config.model.depth or lower --config.model.decoder.depth")
  # Stricter than frozen_cap's clip: a cap that would be clipped, or that is 0, is a mistake.
  max_frozen = get(config, "layerlock.max_frozen")
  if max_frozen != -1:
    if not is_int(max_frozen) or not 1 <= max_frozen < enc:
      raise fail("layerlock.max_frozen", max_frozen,
                 f"must be -1 or in [1, encoder depth={enc}) (the last encoder block must stay "
                 "trainable)", f"pass e.g. --config.layerlock.max_frozen={2 * enc // 3 or 1}")
  else:
    frac = number(config, "layerlock.max_frozen_fraction", 0, 1, lo_open=True, hi_open=True)
    if _raw_cap(config, enc) < 1:
      raise fail("layerlock.max_frozen_fraction", frac,
                 f"of encoder depth {enc} caps frozen blocks at 0, so nothing would ever freeze",
                 f"raise it to >= {1 / enc:.3g} or set --config.layerlock.max_frozen")
  cap = frozen_cap(config, enc)
  events = freeze_events(config, cap)
  if get(config, "layerlock.trigger") == "convergence":
    _check_convergence_trigger(config)
    return
  explicit = get(config, "layerlock.explicit")
  if explicit:
    field, value, first_step = "layerlock.explicit", tuple(explicit), events[0][0]
  else:
    field, value = "layerlock.pixel_steps", get(config, "layerlock.pixel_steps")
  total = get(config, "total_steps")
  if first_step >= total:
    raise fail(field, value, f"puts the first freeze at step {first_step} (first_freeze="
               f"{get(config, 'layerlock.first_freeze')!r}), not before total_steps={total}, so "
               "LayerLock would never freeze a block",
               f"lower --config.{field} or raise --config.total_steps")


def _check_convergence_trigger(config: Any) -> None:
  check_every = integer(config, "layerlock.convergence.check_every", lo=1)
  number(config, "layerlock.convergence.threshold", 0, lo_open=True)
  integer(config, "layerlock.convergence.patience", lo=1)
  min_interval = integer(config, "layerlock.convergence.min_interval", lo=1)
  max_interval = integer(config, "layerlock.convergence.max_interval", lo=0)
  if max_interval and max_interval < min_interval:
    raise fail("layerlock.convergence.max_interval", max_interval, f"is below min_interval="
               f"{min_interval}, so every freeze would be forced", "pass 0 (never forced) or a "
               f"value >= {min_interval}")
  pixel_steps = get(config, "layerlock.pixel_steps")
  total = get(config, "total_steps")
  if max(pixel_steps, 1) + check_every > total:
    raise fail("layerlock.pixel_steps", pixel_steps, f"leaves no convergence check between the "
               f"end of the pixel phase and total_steps={total}, so nothing would ever freeze",
               "lower --config.layerlock.pixel_steps or raise --config.total_steps")
