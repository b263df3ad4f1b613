"""layerlock_jax.plan: each rule once, the same error wherever it is met, counts by hand."""
import ast
import pathlib

import pytest

import layerlock_jax
from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import validation as config_validation
from layerlock_jax.models import vit
from layerlock_jax import plan
from layerlock_jax.plan import options
from layerlock_jax import sharding

PACKAGE = pathlib.Path(layerlock_jax.__file__).parent
OPTION_LISTS = {name: value for name, value in vars(options).items()
                if name.isupper() and isinstance(value, tuple) and len(value) >= 2}


def test_implementations_are_keyed_by_the_option_names():
  assert tuple(vit.DTYPES) == options.DTYPES
  assert {"none", *vit.REMAT_POLICIES} == set(options.REMAT_POLICIES)
  assert sharding.MESH_AXES is options.MESH_AXES


def _string_literals(path: pathlib.Path):
  """Tuples, lists and sets of >= 2 string constants in a source file, with their line."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
      yield node.lineno, frozenset(e.value for e in node.elts)


# Benchmark and paper-reproduction tools, whose sweeps choose options (in the order they print)
# rather than define them; they are on their way out of the library package.
TOOLS = ("reproduce.py",)


def test_no_option_list_is_written_twice():
  """A second copy of an option list (say, the masking types in a checker) would drift."""
  wanted = {frozenset(v): name for name, v in OPTION_LISTS.items()}
  library = [p for p in PACKAGE.rglob("*.py") if str(p.relative_to(PACKAGE)) not in TOOLS
             and p != PACKAGE / "plan" / "options.py"]
  copies = [f"{path.relative_to(PACKAGE)}:{line} copies options.{wanted[names]}"
            for path in library
            for line, names in _string_literals(path) if names in wanted]
  assert copies == []


def _grid_config(frames, size, patch, ratio, mask_type="random"):
  c = config_defaults.base_config()
  c.data.num_frames, c.data.image_size = frames, size
  c.model.patch_size = patch
  c.masking.ratio, c.masking.type = ratio, mask_type
  return c


def test_mask_counts_by_hand():
  # 8 x 14 x 14 = 1568 tokens: 0.95 * 1568 = 1489.6 -> 1490 masked.
  assert plan.num_masked((8, 14, 14), 0.95, "random") == 1490
  # Tubes round per frame: 0.9 * 196 = 176.4 -> 176 positions, on each of 8 frames.
  assert plan.num_masked((8, 14, 14), 0.9, "tube") == 8 * 176
  # Python's round is half-to-even: 0.5 * 5 = 2.5 -> 2, 0.5 * 7 = 3.5 -> 4.
  assert plan.num_masked((1, 1, 5), 0.5, "random") == 2
  assert plan.num_masked((1, 1, 7), 0.5, "random") == 4
  # Multi-block: per 4x4 frame 8 targets and 4 context positions, over 2 frames.
  assert plan.multiblock_counts((2, 4, 4), 0.5, 0.25) == (8, 16)
  # LayerLock's subsample keeps at least one masked token.
  assert plan.latent_queries(1490, 0.05) == 74 and plan.latent_queries(3, 0.05) == 1
  geo = plan.token_geometry(_grid_config(16, 224, (2, 16, 16), 0.9, "tube"))
  assert geo == {"num_tokens": 1568, "patch_dim": 1536, "num_masked": 1408, "num_visible": 160,
                 "num_queries": 1408}


def _validation_error(config) -> str:
  with pytest.raises(plan.ConfigError) as err:
    config_validation.validate(config, num_devices=1)
  return str(err.value)


def _plan_error(fn, *args) -> str:
  with pytest.raises(plan.ConfigError) as err:
    fn(*args)
  return str(err.value)


def test_a_rule_reads_the_same_before_and_during_a_run():
  """The validator reports the plan's own error, so a message exists once."""
  c = _grid_config(4, 32, (2, 16, 16), 0.95)  # 8 tokens: 0.95 leaves none visible
  assert _validation_error(c) == _plan_error(plan.check_masking, c, plan.token_grid(c))
  assert "masking.ratio: ratio=0.95 leaves no visible token of 8 tokens" in _validation_error(c)
  assert plan.token_geometry(c)["num_visible"] == 0  # counting alone does not judge

  c = config_defaults.base_config()
  c.total_steps, c.layerlock.enabled, c.layerlock.max_frozen = 1000, True, 4
  c.layerlock.explicit = ((10, 2), (20, 1))
  assert _validation_error(c) == _plan_error(plan.freeze_table, c)
  assert "entry 1 (20, 1)" in _validation_error(c)

  c = config_defaults.base_config()
  c.blockwise.enabled, c.blockwise.num_segments = True, 5  # 12 blocks do not split into 5 segments
  assert _validation_error(c) == _plan_error(plan.stage_spec, c, 0, "pixels")
  assert "num_segments=5 does not divide the encoder depth 12" in _validation_error(c)


def test_rope_sections_round_each_share_down_to_whole_pairs():
  # 64 features at 10/25/25%: 6.4 -> 6, 16, 16 (the other 26 carry no position).
  assert plan.rope_sections(64, (0.10, 0.25, 0.25)) == (6, 16, 16)
  # A 16-dim head: 1.6 -> 0 (no pair), 4.0 -> 4, 5.6 -> 5 -> 4.
  assert plan.rope_sections(16, (0.10, 0.25, 0.35)) == (0, 4, 4)


def test_encoder_depth_and_latent_heads():
  c = config_defaults.base_config()  # ViT-B: 12 blocks
  assert plan.encoder_depth(c) == 12 and plan.query_decoder_depth(c) == 0
  c.model.decoder.type, c.model.decoder.depth = "query", 4
  assert plan.encoder_depth(c) == 8 and plan.query_decoder_depth(c) == 4
  c.layerlock.enabled, c.layerlock.max_frozen = True, 5
  assert plan.num_latent_heads(c) == 1
  c.layerlock.multi_target = True
  assert plan.num_latent_heads(c) == 5


def test_blockwise_sequential_plan_by_hand():
  c = config_defaults.base_config()
  c.total_steps = 100
  c.blockwise.enabled, c.blockwise.regime = True, "sequential"
  c.blockwise.boundaries = (2, 6, 12)
  # Even split of 100 steps over 3 segments: 33, 33 and the remaining 34.
  assert plan.segments.sequential_budgets(c, 3) == (33, 33, 34)
  assert [(s.start_step, s.frozen_layers, s.target) for s in plan.freeze_table(c)] == [
      (0, 0, "segment_1_pixels"), (33, 2, "segment_2_pixels"), (66, 6, "segment_3_pixels")]
  spec = plan.stage_spec(c, 6, "segment_3_pixels")
  assert (spec.active_segment, spec.idle_layers, spec.boundaries) == (3, 0, (2, 6, 12))
  assert plan.stage_spec(c, 2, "segment_2_pixels").idle_layers == 6
