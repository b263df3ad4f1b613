"""Every named option a config field accepts: the one list each check and each implementation reads.

Implementations that map a name to code (models/vit.py's dtypes and remat policies) key their
tables by these names; tests/test_plan.py checks that the two agree.
"""
MESH_AXES = ("data", "fsdp", "tensor")  # declaration order = slow to fast interconnect

# model
POSEMBS = ("learned_3d", "sincos", "sincos_1d", "rope", "none")
ROPE_PLACEMENTS = ("after_norm", "qk")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")
# The same policies from the least recomputation to the most (aot --fit breaks ties with it).
REMAT_BY_RECOMPUTE = ("none", "everything_saveable", "dots_saveable",
                      "dots_with_no_batch_dims_saveable", "nothing_saveable")
ATTENTIONS = ("auto", "xla", "dot_product", "pallas")
ATTENTION_IMPLS = ("", "xla", "cudnn")
DECODER_TYPES = ("light", "query")

# masking and objectives
MASKING_TYPES = ("random", "tube", "multiblock")  # multiblock: V-JEPA only
PIXEL_NORMS = ("none", "patch", "patch_channel")
TARGET_NORMS = ("none", "layernorm", "standardize")
TARGET_CENTERS = ("none", "clip")

# LayerLock, naive latent, blockwise, V-JEPA
FIRST_FREEZES = ("end_of_pixel", "one_interval_later")
LAYERLOCK_TARGETS = ("latent", "pixel")
FREEZE_TRIGGERS = ("schedule", "convergence")
WEIGHT_SCHEDULES = ("constant", "cosine")
BLOCKWISE_REGIMES = ("concurrent", "sequential", "e2e")
VJEPA_LOSSES = ("l1", "l2")
VJEPA_TEACHERS = ("ema", "copy")

# data
SYNTHETIC_SOURCES = ("moving_mnist", "gratings", "camera_motion")
FILE_SOURCES = ("video_folder", "array_record")
DATA_SOURCES = SYNTHETIC_SOURCES + FILE_SOURCES + ("tfds",)
# video_folder: where labels and splits come from ("folder": class sub-folders or labels_csv; the
# others: the benchmark's published annotation files, data/layouts.py)
DATA_LAYOUTS = ("folder", "kinetics", "ssv2", "ucf101", "hmdb51")
