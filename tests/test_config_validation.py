"""validate() must name the right field and the bad value for every rule, and accept valid edges.

Every failing case asserts the exact `ConfigError.field` and a snippet of the message (normally
`leaf=value`), so a check that fires on the wrong field, or a message that hides the value, fails.
The valid cases pin the boundaries, so an over-eager check fails too.
"""
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax.config.validation import resolve_mesh_shape, validate
from layerlock_jax.plan import ConfigError, format_error
from layerlock_jax.plan import encoder_depth


def _tiny():
  """A small valid config: 4 frames x 32^2 with 2x16x16 tubelets -> a 2x2x2 grid of 8 tokens."""
  c = config_defaults.base_config()
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 64, 4, 128, 4
  c.model.decoder.width, c.model.decoder.depth = 32, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 64
  c.data.num_frames, c.data.image_size = 4, 32
  c.masking.ratio = 0.75  # 6 of 8 tokens masked, 2 visible
  c.batch_size, c.total_steps, c.data.num_clips = 8, 100, 16
  c.layerlock.pixel_steps, c.layerlock.interval = 10, 10
  return c


_set = config_loading.override


_LL = {"layerlock.enabled": True}
_NL = {"naive_latent.enabled": True}
_ROPE_QK = {"model.posemb": "rope", "model.rope_placement": "qk"}

# (id, overrides, expected field without "config.", message snippet (None: "leaf=repr(value)"),
#  validate kwargs)
BAD = [
    # top level
    ("total_steps", {"total_steps": 0}, "total_steps", None, {}),
    ("batch_size", {"batch_size": 0}, "batch_size", None, {}),
    ("log_every", {"log_every": 0}, "log_every", None, {}),
    ("checkpoint_every", {"checkpoint_every": -1}, "checkpoint_every", None, {}),
    ("keep_checkpoints", {"keep_checkpoints": 0}, "keep_checkpoints", None, {}),
    ("keep_every", {"keep_every": -5}, "keep_every", None, {}),
    ("eval_every", {"eval_every": -1}, "eval_every", None, {}),
    # model
    ("width", {"model.width": 0}, "model.width", None, {}),
    ("depth", {"model.depth": 0}, "model.depth", None, {}),
    ("heads_divide", {"model.num_heads": 5}, "model.num_heads", "num_heads=5", {}),
    ("rope_qk_odd_head", {"model.width": 40, "model.num_heads": 8, **_ROPE_QK}, "model.num_heads",
     "40/8=5", {}),
    ("frames_div", {"data.num_frames": 5}, "data.num_frames", None, {}),
    ("image_div", {"data.image_size": 40}, "data.image_size", None, {}),
    ("patch_len", {"model.patch_size": (2, 16)}, "model.patch_size", None, {}),
    ("patch_zero", {"model.patch_size": (2, 0, 16)}, "model.patch_size", None, {}),
    ("posemb", {"model.posemb": "lerned_3d"}, "model.posemb", None, {}),
    ("rope_frac_len", {"model.rope_fractions": (0.1, 0.2)}, "model.rope_fractions", None, {}),
    ("rope_frac_neg", {"model.rope_fractions": (-0.1, 0.25, 0.25)}, "model.rope_fractions", None,
     {}),
    ("rope_frac_sum", {"model.rope_fractions": (0.5, 0.5, 0.5)}, "model.rope_fractions", None, {}),
    # 0.1 of a 16-dim head is 1.6 features: not even one rotation pair.
    ("rope_qk_features", _ROPE_QK, "model.rope_fractions", "rotates 0 of 16", {}),
    ("rope_norm_features", {"model.posemb": "rope", "model.rope_fractions": (0.01, 0.25, 0.25)},
     "model.rope_fractions", "rotates 0 of 64", {}),
    ("rope_placement", {"model.rope_placement": "inside"}, "model.rope_placement", None, {}),
    ("rope_base", {"model.posemb": "rope", "model.rope_base": 0.0}, "model.rope_base", None, {}),
    ("layer_norm_eps", {"model.layer_norm_eps": 0.0}, "model.layer_norm_eps", None, {}),
    ("dtype", {"model.dtype": "float16"}, "model.dtype", None, {}),
    ("remat", {"model.remat_policy": "full"}, "model.remat_policy", None, {}),
    ("attention", {"model.attention": "flash"}, "model.attention", None, {}),
    ("attention_impl", {"model.attention_impl": "triton"}, "model.attention_impl", None, {}),
    ("decoder_type", {"model.decoder.type": "mlp"}, "model.decoder.type", None, {}),
    ("light_heads", {"model.decoder.num_heads": 3}, "model.decoder.num_heads", "width=32", {}),
    ("query_depth_0", {"model.decoder.type": "query", "model.decoder.depth": 0},
     "model.decoder.depth", None, {}),
    ("query_depth_all", {"model.decoder.type": "query", "model.decoder.depth": 4},
     "model.decoder.depth", None, {}),
    # masking
    ("mask_type", {"masking.type": "block"}, "masking.type", None, {}),
    ("ratio_0", {"masking.ratio": 0.0}, "masking.ratio", None, {}),
    ("ratio_1", {"masking.ratio": 1.0}, "masking.ratio", None, {}),
    # round(0.95 * 8) = 8 masked; round(0.05 * 8) = 0 masked (the masker's rounding).
    ("no_visible", {"masking.ratio": 0.95}, "masking.ratio", "no visible token of 8 tokens", {}),
    ("no_masked", {"masking.ratio": 0.05}, "masking.ratio", "masks no token", {}),
    # Tube masks count the 2x2 spatial grid: round(0.9 * 4) = 4 leaves none visible, while random
    # masking of the 8 tokens at 0.9 keeps one (see GOOD).
    ("tube_no_visible", {"masking.type": "tube", "masking.ratio": 0.9}, "masking.ratio",
     "4 spatial positions", {}),
    # objective and optimizer
    ("pixel_norm", {"objective.pixel_norm": "batch"}, "objective.pixel_norm", None, {}),
    ("lr_0", {"optimizer.lr": 0.0}, "optimizer.lr", None, {}),
    ("lr_neg", {"optimizer.lr": -1e-3}, "optimizer.lr", None, {}),
    ("min_lr_gt_lr", {"optimizer.min_lr": 1.0}, "optimizer.min_lr", None, {}),
    ("min_lr_neg", {"optimizer.min_lr": -1e-6}, "optimizer.min_lr", None, {}),
    ("warmup", {"optimizer.warmup_steps": -1}, "optimizer.warmup_steps", None, {}),
    ("weight_decay", {"optimizer.weight_decay": -0.1}, "optimizer.weight_decay", None, {}),
    ("grad_clip", {"optimizer.grad_clip": -1.0}, "optimizer.grad_clip", None, {}),
    ("b1", {"optimizer.b1": 1.0}, "optimizer.b1", None, {}),
    ("b2", {"optimizer.b2": -0.1}, "optimizer.b2", None, {}),
    ("eps", {"optimizer.eps": 0.0}, "optimizer.eps", None, {}),
    # layerlock
    ("ll_interval", {**_LL, "layerlock.interval": 0}, "layerlock.interval", None, {}),
    ("ll_jump", {**_LL, "layerlock.jump": 0}, "layerlock.jump", None, {}),
    ("ll_pixel", {**_LL, "layerlock.pixel_steps": -1}, "layerlock.pixel_steps", None, {}),
    ("ll_first", {**_LL, "layerlock.first_freeze": "later"}, "layerlock.first_freeze", None, {}),
    ("ll_target", {**_LL, "layerlock.target": "pixels"}, "layerlock.target", None, {}),
    ("ll_norm", {**_LL, "layerlock.target_norm": "bn"}, "layerlock.target_norm", None, {}),
    ("ll_frac_0", {**_LL, "layerlock.latent_patch_fraction": 0.0},
     "layerlock.latent_patch_fraction", None, {}),
    ("ll_frac_big", {**_LL, "layerlock.latent_patch_fraction": 1.5},
     "layerlock.latent_patch_fraction", None, {}),
    ("ll_weight", {**_LL, "layerlock.latent_loss_weight": -1.0}, "layerlock.latent_loss_weight",
     None, {}),
    ("ll_mini", {**_LL, "layerlock.mini_warmup_steps": -1}, "layerlock.mini_warmup_steps", None,
     {}),
    ("ll_max_all", {**_LL, "layerlock.max_frozen": 4}, "layerlock.max_frozen", "encoder depth=4",
     {}),
    ("ll_max_zero", {**_LL, "layerlock.max_frozen": 0}, "layerlock.max_frozen", None, {}),
    # With the query decoder reusing 1 block the encoder is 3 deep, so 3 frozen is everything.
    ("ll_max_query", {**_LL, "model.decoder.type": "query", "layerlock.max_frozen": 3},
     "layerlock.max_frozen", "encoder depth=3", {}),
    ("ll_fraction_1", {**_LL, "layerlock.max_frozen_fraction": 1.0},
     "layerlock.max_frozen_fraction", None, {}),
    ("ll_fraction_0", {**_LL, "layerlock.max_frozen_fraction": 0.0},
     "layerlock.max_frozen_fraction", None, {}),
    ("ll_fraction_cap0", {**_LL, "layerlock.max_frozen_fraction": 0.2},
     "layerlock.max_frozen_fraction", "caps frozen blocks at 0", {}),
    ("ll_and_naive", {**_LL, **_NL}, "naive_latent.enabled", None, {}),
    ("ll_pixel_no_loss", {**_LL, "layerlock.target": "pixel", "layerlock.keep_pixel_loss": False},
     "layerlock.keep_pixel_loss", None, {}),
    ("ll_never_freezes", {**_LL, "layerlock.pixel_steps": 100}, "layerlock.pixel_steps",
     "step 100", {}),
    ("ll_never_freezes_later", {**_LL, "layerlock.pixel_steps": 95,
                                "layerlock.first_freeze": "one_interval_later"},
     "layerlock.pixel_steps", "step 105", {}),
    ("ll_explicit_order", {**_LL, "layerlock.explicit": ((10, 1), (5, 2))}, "layerlock.explicit",
     "entry 1 (5, 2)", {}),
    ("ll_explicit_k_down", {**_LL, "layerlock.explicit": ((10, 2), (20, 1))},
     "layerlock.explicit", "entry 1 (20, 1)", {}),
    ("ll_explicit_step0", {**_LL, "layerlock.explicit": ((0, 1),)}, "layerlock.explicit",
     "entry 0 (0, 1)", {}),
    # Default cap: floor(2/3 * 4) = 2 blocks.
    ("ll_explicit_over_cap", {**_LL, "layerlock.explicit": ((10, 3),)}, "layerlock.explicit",
     "the cap 2", {}),
    ("ll_freeze_at_0", {**_LL, "layerlock.pixel_steps": 0}, "layerlock.pixel_steps", "step 0",
     {}),
    ("ll_explicit_late", {**_LL, "layerlock.explicit": ((100, 1),)}, "layerlock.explicit",
     "step 100", {}),
    ("ll_encoder_too_shallow", {**_LL, "model.depth": 2, "model.decoder.type": "query"},
     "model.depth", "encoder of 1 block", {}),
    # naive latent
    ("nl_layer_0", {**_NL, "naive_latent.layer": 0}, "naive_latent.layer", None, {}),
    ("nl_layer_deep", {**_NL, "naive_latent.layer": 5}, "naive_latent.layer", None, {}),
    ("nl_layer_query", {**_NL, "model.decoder.type": "query", "naive_latent.layer": 4},
     "naive_latent.layer", "encoder depth=3", {}),
    ("nl_schedule", {**_NL, "naive_latent.weight_schedule": "linear"},
     "naive_latent.weight_schedule", None, {}),
    ("nl_norm", {**_NL, "naive_latent.target_norm": "bn"}, "naive_latent.target_norm", None, {}),
    ("nl_weight", {**_NL, "naive_latent.weight": -1.0}, "naive_latent.weight", None, {}),
    # mesh
    ("mesh_two_free", {"mesh.fsdp": -1}, "mesh.fsdp", "fsdp=-1", {"num_devices": 8}),
    ("mesh_zero", {"mesh.tensor": 0}, "mesh.tensor", None, {"num_devices": 8}),
    ("mesh_product", {"mesh.data": 2, "mesh.fsdp": 2}, "mesh", "4 devices but 8",
     {"num_devices": 8}),
    ("mesh_unresolvable", {"mesh.fsdp": 3}, "mesh.data", "8 devices", {"num_devices": 8}),
    ("preset", {"mesh.preset": "zero3"}, "mesh.preset", None, {"num_devices": 8}),
    ("rules_not_pair", {"mesh.rules": (("mlp",),)}, "mesh.rules", "('mlp',)", {"num_devices": 8}),
    ("rules_bad_axis", {"mesh.rules": (("mlp", "model"),)}, "mesh.rules", "'model'",
     {"num_devices": 8}),
    ("rules_bad_axis_tuple", {"mesh.rules": (("embed", ("fsdp", "x")),)}, "mesh.rules", "'x'",
     {"num_devices": 8}),
    ("batch_parallel", {}, "batch_size", "data(16) x fsdp(1) = 16", {"num_devices": 16}),
    ("batch_processes", {"mesh.data": 1, "mesh.tensor": -1, "mesh.preset": "fsdp_tensor"},
     "batch_size", "3 processes", {"num_devices": 3, "process_count": 3}),
    ("tensor_idle", {"mesh.data": -1, "mesh.tensor": 2}, "mesh.tensor", "tensor=2",
     {"num_devices": 8}),
    ("tensor_rules_removed", {"mesh.tensor": 2, "mesh.preset": "fsdp_tensor",
                              "mesh.rules": (("mlp", None), ("heads", None))},
     "mesh.tensor", "tensor=2", {"num_devices": 8}),
    # 8 clips over data=2 x fsdp=4 = 8 shards is fine; 4 clips is not (the next case shows the
    # batch rule is honoured when it shards over `data` only).
    ("batch_fsdp", {"batch_size": 4, "mesh.data": 2, "mesh.fsdp": 4}, "batch_size", "fsdp(4) = 8",
     {"num_devices": 8}),
    # data
    ("source", {"data.source": "kinetics"}, "data.source", None, {}),
    ("num_workers", {"data.num_workers": -1}, "data.num_workers", None, {}),
    ("prefetch", {"data.prefetch": -1}, "data.prefetch", None, {}),
    ("read_threads", {"data.read_threads": 0}, "data.read_threads", None, {}),
    ("read_threads_word", {"data.read_threads": "many"}, "data.read_threads", None, {}),
    ("host_malloc", {"host_malloc": "fast"}, "host_malloc", None, {}),
    ("num_clips", {"data.num_clips": 4}, "data.num_clips", "batch_size=8", {}),
    ("folder_empty", {"data.source": "video_folder"}, "data.path", "'video_folder'", {}),
    ("folder_missing", {"data.source": "video_folder", "data.path": "/nonexistent/videos"},
     "data.path", None, {}),
    ("records_no_match", {"data.source": "array_record",
                          "data.path": "/nonexistent/train-*.array_record"},
     "data.path", "matches no file", {}),
    ("tfds_empty", {"data.source": "tfds"}, "data.path", "'tfds'", {}),
]


@pytest.mark.parametrize("overrides,field,snippet,kwargs", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_config_names_field_and_value(overrides, field, snippet, kwargs):
  c = _set(_tiny(), overrides)
  kwargs = {"num_devices": 1, **kwargs}
  with pytest.raises(ConfigError) as info:
    validate(c, **kwargs)
  err = info.value
  assert err.field == f"config.{field}", err
  if field in overrides:  # the offending value is quoted as leaf=value
    assert f"{field.rsplit('.', 1)[-1]}={overrides[field]!r}" in err.message, err.message
  else:
    assert snippet is not None, "name a snippet when the field is not overridden directly"
  if snippet is not None:
    assert snippet in err.message, err.message
  assert "\n" not in err.message
  assert format_error(err) == f"Config error: config.{field}: {err.message}"


GOOD = [
    ("tiny", {}, {}),
    ("base_config_on_8", None, {"num_devices": 8}),
    ("rope_after_norm", {"model.posemb": "rope"}, {}),
    ("rope_qk_wide_heads", {**_ROPE_QK, "model.num_heads": 2}, {}),
    ("rope_zero_share", {"model.posemb": "rope", "model.rope_fractions": (0.0, 0.25, 0.25)}, {}),
    # Placement and odd head dims only matter when RoPE is on.
    ("qk_without_rope", {"model.rope_placement": "qk", "model.width": 40, "model.num_heads": 8},
     {}),
    ("random_0.9", {"masking.ratio": 0.9}, {}),
    ("ll_freeze_at_interval", {**_LL, "layerlock.pixel_steps": 0,
                               "layerlock.first_freeze": "one_interval_later"}, {}),
    ("tube_0.75", {"masking.type": "tube"}, {}),
    ("min_lr_eq_lr", {"optimizer.min_lr": 1.5e-4}, {}),
    ("layerlock", _LL, {}),
    ("ll_max_light", {**_LL, "layerlock.max_frozen": 3}, {}),
    ("ll_max_query", {**_LL, "model.decoder.type": "query", "layerlock.max_frozen": 2}, {}),
    ("ll_last_step_freeze", {**_LL, "layerlock.pixel_steps": 99}, {}),
    ("ll_explicit", {**_LL, "layerlock.max_frozen": 3, "layerlock.explicit": ((10, 1), (20, 3))},
     {}),
    ("ll_pixel_target", {**_LL, "layerlock.target": "pixel"}, {}),
    # Disabled sections are not checked: their defaults may be tuned for another size.
    ("ll_disabled", {"layerlock.interval": 0, "layerlock.max_frozen": 99}, {}),
    ("nl_middle", {**_NL, "naive_latent.layer": -1}, {}),
    ("nl_last", {**_NL, "naive_latent.layer": 4}, {}),
    ("mesh_free_fsdp", {"mesh.data": 2, "mesh.fsdp": -1}, {"num_devices": 8}),
    ("mesh_explicit", {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
                       "mesh.preset": "fsdp_tensor"}, {"num_devices": 8}),
    ("tensor_via_rules", {"mesh.tensor": 2, "mesh.rules": (("mlp", "tensor"),)},
     {"num_devices": 8}),
    ("batch_rule_data_only", {"batch_size": 4, "mesh.data": 2, "mesh.fsdp": 4,
                              "mesh.rules": (("batch", "data"),)}, {"num_devices": 8}),
    ("processes", {}, {"num_devices": 8, "process_count": 2}),
    ("tfds_name", {"data.source": "tfds", "data.path": "kinetics400"}, {}),
    ("remote_records", {"data.source": "array_record", "data.path": "gs://b/train-*"}, {}),
]


@pytest.mark.parametrize("overrides,kwargs", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_valid_configs_pass(overrides, kwargs):
  c = config_defaults.base_config() if overrides is None else _set(_tiny(), overrides)
  assert validate(c, **{"num_devices": 1, **kwargs}) is None


def test_file_backed_sources_accept_existing_paths(tmp_path):
  c = _set(_tiny(), {"data.source": "video_folder", "data.path": str(tmp_path)})
  validate(c, num_devices=1)
  pattern = str(tmp_path / "train-*.array_record")
  c = _set(_tiny(), {"data.source": "array_record", "data.path": pattern})
  with pytest.raises(ConfigError, match="matches no file"):
    validate(c, num_devices=1)
  (tmp_path / "train-00000.array_record").write_bytes(b"")
  validate(c, num_devices=1)


def test_first_problem_wins():
  c = _set(_tiny(), {"model.num_heads": 5, "total_steps": 0, "data.source": "nope"})
  with pytest.raises(ConfigError) as info:
    validate(c, num_devices=1)
  assert info.value.field == "config.total_steps"


def test_missing_field_is_reported():
  c = _tiny()
  del c.model["dtype"]
  with pytest.raises(ConfigError) as info:
    validate(c, num_devices=1)
  assert info.value.field == "config.model.dtype"
  assert "base_config" in info.value.message


def test_config_error_is_one_line_value_error():
  err = ConfigError("config.x", "bad\nvalue  here")
  assert isinstance(err, ValueError)
  assert err.field == "config.x" and err.message == "bad value here"
  assert str(err) == "config.x: bad value here"
  assert format_error(err) == "Config error: config.x: bad value here"


@pytest.mark.parametrize("sizes,devices,expected", [
    ((-1, 1, 1), 8, (8, 1, 1)),
    ((1, -1, 1), 256, (1, 256, 1)),
    ((2, -1, 2), 8, (2, 2, 2)),
    ((2, 2, -1), 8, (2, 2, 2)),
    ((2, 2, 2), 8, (2, 2, 2)),
    ((-1, 1, 1), 1, (1, 1, 1)),
])
def test_resolve_mesh_shape(sizes, devices, expected):
  mesh = dict(zip(("data", "fsdp", "tensor"), sizes))
  assert resolve_mesh_shape(mesh, devices) == expected


@pytest.mark.parametrize("sizes,devices,field,snippet", [
    ((-1, -1, 1), 8, "config.mesh.fsdp", "at most one"),
    ((0, 1, 1), 8, "config.mesh.data", "data=0"),
    ((-2, 1, 1), 8, "config.mesh.data", "data=-2"),
    ((3, -1, 1), 8, "config.mesh.fsdp", "product 3"),
    ((2, 2, 1), 8, "config.mesh", "has 4 devices but 8"),
    ((2, 2, 4), 8, "config.mesh", "has 16 devices but 8"),
])
def test_resolve_mesh_shape_errors(sizes, devices, field, snippet):
  mesh = dict(zip(("data", "fsdp", "tensor"), sizes))
  with pytest.raises(ConfigError) as info:
    resolve_mesh_shape(mesh, devices)
  assert info.value.field == field
  assert snippet in info.value.message


def test_resolve_mesh_shape_rejects_bad_device_count():
  with pytest.raises(ValueError, match="num_devices"):
    resolve_mesh_shape({"data": -1, "fsdp": 1, "tensor": 1}, 0)


def test_encoder_depth_excludes_query_decoder_blocks():
  c = _tiny()
  assert encoder_depth(c) == 4
  c.model.decoder.type = "query"
  assert encoder_depth(c) == 3


# --- blockwise SSL -------------------------------------------------------------------------------
# _tiny() has a 4-block encoder and 100 total steps.
_BW = {"blockwise.enabled": True}
_BW_SEQ = {**_BW, "blockwise.regime": "sequential"}

BW_BAD = [
    ("bw_regime", {**_BW, "blockwise.regime": "simultaneous"}, "blockwise.regime", None),
    ("bw_with_layerlock", {**_BW, **_LL}, "blockwise.enabled", "layerlock.enabled=True"),
    ("bw_with_naive", {**_BW, **_NL}, "blockwise.enabled", "naive_latent.enabled=True"),
    ("bw_query_decoder", {**_BW, "model.decoder.type": "query"}, "model.decoder.type", None),
    ("bw_num_segments_divide", {**_BW, "blockwise.num_segments": 3}, "blockwise.num_segments",
     "encoder depth 4"),
    ("bw_num_segments_deep", {**_BW, "blockwise.num_segments": 8}, "blockwise.num_segments", None),
    ("bw_num_segments_0", {**_BW, "blockwise.num_segments": 0}, "blockwise.num_segments", None),
    ("bw_bounds_short", {**_BW, "blockwise.boundaries": (1, 3)}, "blockwise.boundaries",
     "encoder depth 4"),
    ("bw_bounds_order", {**_BW, "blockwise.boundaries": (3, 2, 4)}, "blockwise.boundaries", None),
    ("bw_bounds_repeat", {**_BW, "blockwise.boundaries": (2, 2, 4)}, "blockwise.boundaries", None),
    ("bw_bounds_zero", {**_BW, "blockwise.boundaries": (0, 4)}, "blockwise.boundaries", None),
    ("bw_seq_length", {**_BW_SEQ, "blockwise.sequential_steps": (50, 50)},
     "blockwise.sequential_steps", "4 budgets"),
    ("bw_seq_sum", {**_BW_SEQ, "blockwise.sequential_steps": (30, 30, 30, 30)},
     "blockwise.sequential_steps", "total_steps=100"),
    ("bw_seq_zero", {**_BW_SEQ, "blockwise.sequential_steps": (0, 30, 30, 30)},
     "blockwise.sequential_steps", None),
    # Uneven boundaries make 2 blocks, so 2 budgets are needed.
    ("bw_seq_uneven", {**_BW_SEQ, "blockwise.boundaries": (1, 4),
                       "blockwise.sequential_steps": (10, 10, 10)},
     "blockwise.sequential_steps", "2 budgets"),
    ("bw_seq_too_short", {**_BW_SEQ, "total_steps": 3}, "total_steps", "4 segments"),
]


@pytest.mark.parametrize("overrides,field,snippet", [b[1:] for b in BW_BAD],
                         ids=[b[0] for b in BW_BAD])
def test_bad_blockwise_config_names_field_and_value(overrides, field, snippet):
  with pytest.raises(ConfigError) as info:
    validate(_set(_tiny(), overrides), num_devices=1)
  err = info.value
  assert err.field == f"config.{field}", err
  if field in overrides:
    assert f"{field.rsplit('.', 1)[-1]}={overrides[field]!r}" in err.message, err.message
  if snippet is not None:
    assert snippet in err.message, err.message


BW_GOOD = [
    ("bw_default", _BW),
    ("bw_e2e_one_block", {**_BW, "blockwise.regime": "e2e", "blockwise.num_segments": 1}),
    ("bw_every_layer", {**_BW, "blockwise.num_segments": 4}),
    ("bw_uneven", {**_BW, "blockwise.boundaries": (1, 3, 4)}),
    ("bw_seq_even_split", _BW_SEQ),
    ("bw_seq_budgets_fill", {**_BW_SEQ, "blockwise.sequential_steps": (25, 25, 25, 25)}),
    ("bw_seq_budgets_short", {**_BW_SEQ, "blockwise.sequential_steps": (10, 10, 10, 10)}),
    ("bw_seq_one_step_each", {**_BW_SEQ, "total_steps": 4}),
    # Budgets only matter to the sequential regime; other regimes ignore them.
    ("bw_concurrent_ignores_budgets", {**_BW, "blockwise.sequential_steps": (1,)}),
    # A disabled section is not checked, even with layerlock on.
    ("bw_disabled", {**_LL, "blockwise.num_segments": 3, "blockwise.regime": "x"}),
]


@pytest.mark.parametrize("overrides", [g[1] for g in BW_GOOD], ids=[g[0] for g in BW_GOOD])
def test_valid_blockwise_configs_pass(overrides):
  assert validate(_set(_tiny(), overrides), num_devices=1) is None
