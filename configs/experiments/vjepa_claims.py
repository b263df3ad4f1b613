r"""V-JEPA vs V-JEPA + LayerLock for `python -m experiments.reproduce` (the LayerLock paper's second
family: latent prediction with an EMA teacher).

  python -m layerlock_jax.main --config=configs/experiments/vjepa_claims.py:vjepa_layerlock \
      --config.seed=0 --workdir=/tmp/claims/vjepa_layerlock_s0

configs/vjepa_tiny.py unchanged (a 6-block encoder of width 128, a 2-block predictor, multi-block
masks on 4 frames of 48^2 camera-motion clips, EMA 0.99 -> 1.0, 300 steps of 16 clips), with only
the final checkpoint kept. The text after ':' is the arm, optionally followed by `,quick`:

  vjepa             plain V-JEPA: the target is the EMA teacher's last block
  vjepa_layerlock   V-JEPA + LayerLock: the target starts at the teacher's block 1 and moves one
                    block deeper at each freeze (steps 90, 135, 180, 225: k = 1..4 of 6)
  quick             CI-sized: 30 steps, 1 freeze, 256 clips (a smoke run, not a result)
"""
import pathlib

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading

_vjepa_tiny = config_loading.load_module(pathlib.Path(__file__).parent.parent / "vjepa_tiny.py")

ARMS = ("vjepa", "vjepa_layerlock")


def get_config(variant: str = "vjepa_layerlock"):
  arm, *mods = [p.strip() for p in variant.split(",")]
  config_defaults.check_variant(arm, ARMS)
  if any(mod != "quick" for mod in mods):
    raise ValueError(f"unknown modifiers {mods} in {variant!r}; the only one is quick")
  c = _vjepa_tiny.get_config("layerlock" if arm == "vjepa_layerlock" else "")
  c.checkpoint_every = 0           # only the final state: these runs are minutes long
  if "quick" in mods:
    c.total_steps, c.log_every = 30, 5
    c.optimizer.warmup_steps = 5
    ll = c.layerlock
    ll.pixel_steps, ll.interval, ll.max_frozen, ll.mini_warmup_steps = 10, 6, 1, 2
    c.data.num_clips = 256
  return c
