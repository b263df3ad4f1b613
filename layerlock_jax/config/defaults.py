"""The one place where every config field is defined, documented and given its default.

Config files under `configs/` start from `base_config()` and change only what differs; every field a
user can set with `--config.a.b=value` exists here (ml_collections refuses unknown fields, so a typo
fails loudly). Provenance tags in comments: [P] the paper or its official code, [S] a secondary
summary of it, [I] our inference where neither says. Every [S]/[I] choice is a knob.
"""
import ml_collections


# ViT sizes: name -> (width, depth, mlp_dim, num_heads). Kauldron's table, used by 4DS [P-code].
VIT_SIZES = {
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),  # ViT-e, ~3.8B: configs/vit4b.py
}

# Logical-axis -> mesh-axis rules, by preset name (maxtext style). A logical axis maps to a mesh
# axis, a tuple of mesh axes, or None (replicated). The first rule naming a logical axis wins, so
# `config.mesh.rules` (overrides) are put in front of the preset.
SHARDING_PRESETS = {
    # Pure data parallelism: parameters replicated, batch split over every mesh axis.
    "data_parallel": (
        ("batch", ("data", "fsdp")),
    ),
    # ZeRO-3 style: batch split over data+fsdp, every large parameter dimension split over fsdp.
    "fsdp": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", None),
        ("heads", None),
    ),
    # FSDP + Megatron-style tensor parallelism on the "tensor" axis.
    "fsdp_tensor": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
    ),
}


def base_config() -> ml_collections.ConfigDict:
  """All fields with their defaults (a ViT-B video MAE at 16x224^2)."""
  c = ml_collections.ConfigDict()
  c.seed = 0                       # one seed drives init, masks, data order and augmentation
  c.total_steps = 100_000          # optimizer steps
  c.batch_size = 256               # global clips per step (all processes together)
  c.log_every = 100                # steps between metrics.jsonl lines / progress log lines
  c.checkpoint_every = 1000        # steps between checkpoints (0: only at the end)
  c.keep_checkpoints = 3           # most recent checkpoints kept
  c.keep_every = 0                 # also keep every N-th step forever (0: off)
  c.eval_every = 0                 # steps between in-training evaluations (0: off)
  c.init_from = ""                 # load parameters only from this checkpoint dir/step
  c.fork_from = ""                 # start from another run's whole state at its checkpoint step
                                   # N, when its first N steps are this run's
                                   # (layerlock_jax/checkpoint/fork.py)
  c.compile_cache_dir = "auto"     # persistent XLA compile cache of real runs: auto = env
                                   # JAX_COMPILATION_CACHE_DIR or ~/.cache/layerlock_jax/xla; a
                                   # path; "" = off (layerlock_jax/compilation.py)
  # Compile the next freeze stage's program on a background thread while the current one trains.
  # None = auto: on accelerators and on CPU hosts with >= 4 cores (compilation.ahead_helps).
  c.precompile_next_stage = ml_collections.config_dict.placeholder(bool)
  # glibc malloc of the main process: "steady" keeps freed step buffers for the next step instead
  # of mapping fresh zeroed pages every step (less CPU per step, slower compiles: docs/training.md);
  # "auto" = steady where no GPU/TPU can be used and total_steps >= 200; "system" = glibc's
  # defaults (layerlock_jax/host_memory.py).
  c.host_malloc = "auto"
  # Long runs (docs/training.md, "Long runs").
  c.grad_accum_steps = 1           # micro-batches per step (scanned; one update per global batch)
  c.skip_nonfinite_updates = 0     # non-finite steps skipped (update dropped) before the run stops
  c.profile_steps = ()             # (a, b): jax.profiler trace of steps a..b under workdir/tensorboard
  c.profile_all_processes = False  # trace on every process (default: process 0 only)

  # --- model -----------------------------------------------------------------------------------
  m = c.model = ml_collections.ConfigDict()
  m.width, m.depth, m.mlp_dim, m.num_heads = VIT_SIZES["B"]
  m.patch_size = (2, 16, 16)       # tubelet (time, height, width) [P-code 4DS]
  m.posemb = "learned_3d"          # learned_3d (4DS) | sincos (3-D) | sincos_1d (VideoMAE's table) |
                                   # rope (LayerLock) | none
  m.rope_base = 10_000.0           # [I] unknown in the paper; the usual default
  m.rope_fractions = (0.10, 0.25, 0.25)  # share of features rotated along (t, h, w); rest: none [S]
  m.rope_placement = "after_norm"  # after_norm: rotate LN1 output before QKV [S] | qk: rotate q, k
  m.layer_norm_eps = 1e-6
  m.final_norm = False             # a LayerNorm on the encoder's output, before the decoder
                                   # (VideoMAE checkpoints without mean pooling have one)
  m.gelu_approximate = True        # tanh GELU (4DS); False: exact erf GELU (VideoMAE)
  # Pixels -> (pixels / 255 - input_mean) / input_std per RGB channel; the defaults leave [0, 1]
  # (4DS); imported VideoMAE models use the ImageNet statistics they were trained with.
  m.input_mean = (0.0, 0.0, 0.0)
  m.input_std = (1.0, 1.0, 1.0)
  m.dtype = "float32"              # compute dtype: float32 | bfloat16 (parameters stay float32)
  m.remat_policy = "nothing_saveable"  # none | nothing_saveable | dots_saveable |
                                   # dots_with_no_batch_dims_saveable | everything_saveable
  m.scan_unroll = 0                # lax.scan unroll of the encoder and predictor stacks: 0 = auto
                                   # (unrolled where the step runs on CPU, rolled on GPU/TPU: see
                                   # models/video_mae.py); 1: rolled; >= depth: unrolled (e.g. so
                                   # that XLA's cost_analysis counts every layer). The decoder has its
                                   # own (decoder.scan_unroll)
  m.attention = "auto"             # auto: TPU Pallas flash kernel | NVIDIA cuDNN | CPU xla (models/attention.py)
                                   # xla: einsum softmax | dot_product: jax.nn.dot_product_attention
                                   # pallas: the TPU kernel always (Pallas interpret mode off TPU)
  m.attention_impl = ""            # with attention=dot_product: "" (backend picks) | xla | cudnn
  d = m.decoder = ml_collections.ConfigDict()
  d.type = "light"                 # light: VideoMAE decoder | query: 4DS (last backbone blocks + queries)
  d.width = 384                    # light decoder only
  d.depth = 4                      # light: decoder blocks; query: the last `depth` backbone blocks
  d.num_heads = 6                  # light decoder only
  d.mlp_dim = 1536                 # light decoder only
  d.scan_unroll = 4                # lax.scan unroll of the decoder's blocks (4: VideoMAE's 4-block
                                   # decoder unrolled; rolled is slower on CPU: bench/README.md)

  # --- masking and objective ---------------------------------------------------------------------
  c.masking = ml_collections.ConfigDict()
  c.masking.type = "random"        # random (per token) [S] | tube (same spatial mask every frame)
  c.masking.ratio = 0.95           # fraction of tokens hidden from the encoder [S]
  c.objective = ml_collections.ConfigDict()
  c.objective.pixel_norm = "patch_channel"  # none | patch (MAE) | patch_channel (VideoMAE, unbiased)

  # --- optimizer ---------------------------------------------------------------------------------
  o = c.optimizer = ml_collections.ConfigDict()
  o.lr = 1.5e-4                    # peak learning rate
  o.min_lr = 1e-6                  # end of the cosine decay
  o.warmup_steps = 1000
  o.weight_decay = 0.05            # decoupled, not on biases / norms / position parameters
  o.b1, o.b2, o.eps = 0.9, 0.95, 1e-8
  o.grad_clip = 1.0                # global-norm clip over trainable parameters (0: off)

  # --- LayerLock (progressive freezing + target switching) ---------------------------------------
  ll = c.layerlock = ml_collections.ConfigDict()
  ll.enabled = False
  ll.pixel_steps = 10_000          # pixel-only steps before the first freeze
  ll.interval = 2_000              # steps between freezes [S: 2K ablation, 10K for ViT-G]
  ll.jump = 1                      # layers frozen per event [S]
  ll.max_frozen = -1               # cap on frozen blocks; -1: use max_frozen_fraction
  ll.max_frozen_fraction = 2 / 3   # cap as a fraction of encoder depth [S: 32/48 for ViT-G]
  ll.first_freeze = "end_of_pixel"  # end_of_pixel | one_interval_later [I: ambiguous in paper]
  ll.explicit = ()                 # ((step, k), ...) overrides the rule above when non-empty
  ll.trigger = "schedule"          # schedule: the rule / explicit table above | convergence: freeze
                                   # the next block once its parameter norm plateaus [I: the paper's
                                   # "when the parameter norms of the first layers plateau", automated]
  cv = ll.convergence = ml_collections.ConfigDict()
  cv.check_every = 20              # steps between checks of the next block's norm
  cv.threshold = 1e-5              # relative norm change per step counted as "plateaued" [I: set on
                                   # layerlock_tiny, where block 1 settles at ~1e-5 around step 200]
  cv.patience = 2                  # consecutive plateaued checks before the block freezes
  cv.min_interval = 40             # steps at least between freezes (before the first: pixel_steps)
  cv.max_interval = 0              # freeze anyway this many steps after the previous one (0: never)
  ll.target = "latent"             # latent: LayerLock | pixel: progressive freezing, pixel target only
  ll.target_norm = "layernorm"     # none | layernorm (no affine) | standardize (per token)
  ll.target_center = "none"        # none | clip: subtract each clip's per-channel mean over all
                                   # tokens before target_norm (removes the shared clip vector) [I]
  ll.multi_target = False          # predict every frozen block's output, not only the newest [S]
  ll.latent_patch_fraction = 1.0   # random fraction of masked patches in the latent loss [S: 1 or .05]
  ll.keep_pixel_loss = True        # keep the pixel loss after the switch
  ll.latent_loss_weight = 1.0
  ll.mini_warmup_steps = 200       # LR re-warmup length at each target switch (0: off) [S]

  # --- naive latent baseline (collapse ablation; no freezing) -----------------------------------
  nl = c.naive_latent = ml_collections.ConfigDict()
  nl.enabled = False
  nl.layer = -1                    # predict the output of this encoder block (1-based; -1: middle)
  nl.weight = 1.0
  nl.weight_schedule = "constant"  # constant | cosine (rises 0 -> weight over training)
  nl.target_norm = "none"          # none | layernorm | standardize

  # --- blockwise self-supervised learning (arXiv 2601.09040) -----------------------------------
  bw = c.blockwise = ml_collections.ConfigDict()
  bw.enabled = False
  # A segment is a run of encoder blocks with its own decoder, pixel head and loss.
  bw.regime = "concurrent"         # concurrent: all segments, local losses, no cross-segment
                                   # gradient | sequential: segment 1 until its budget, then frozen,
                                   # segment 2, ... | e2e: end-to-end baseline, per-segment decoders
                                   # for measurement only
  bw.num_segments = 4              # equal partition of the encoder depth [P-code: 4 or 6 of 12]
  bw.boundaries = ()               # cumulative segment ends, e.g. (2, 6, 12); beats num_segments
  bw.sequential_steps = ()         # sequential: steps per segment; () = total_steps split evenly
                                   # (each segment's decoder/head use config.model.decoder, light)

  # --- V-JEPA latent prediction with an EMA teacher (layerlock_jax/methods/vjepa.py) --------------------
  vj = c.vjepa = ml_collections.ConfigDict()
  vj.enabled = False               # replaces the MAE decoder and heads by a predictor
  vj.ema = True                    # False: targets from the student itself, gradient through them
                                   # too (the collapse ablation; no teacher is kept)
  vj.ema_start = 0.998             # EMA momentum, linear from start to end over total_steps [P-code]
  vj.ema_end = 1.0
  vj.loss = "l1"                   # l1: mean |pred - target| [P-code V-JEPA] | l2: mean squared
  vj.frozen_teacher = "ema"        # with LayerLock, teacher blocks whose student block is frozen:
                                   # ema (keep averaging; converges to the frozen block) | copy
  vp = vj.predictor = ml_collections.ConfigDict()
  vp.width = 384                   # [P-code V-JEPA: 384 wide, 12 deep]
  vp.depth = 12
  vp.num_heads = 12
  vp.mlp_dim = 1536
  # Multi-block masks (masking.type = "multiblock"): (count, spatial scale) per block group; each
  # clip draws its blocks from one group (clip i: group i mod groups), as a tube over time.
  c.masking.blocks = ((8, 0.15), (2, 0.7))  # short-range + long-range [P-code V-JEPA]
  c.masking.block_aspect = (0.75, 1.5)      # height/width ratio range of a block [P-code V-JEPA]
  c.masking.context_ratio = 0.1    # multiblock: fraction of tokens given to the encoder as context

  # --- mesh and sharding ---------------------------------------------------------------------------
  mesh = c.mesh = ml_collections.ConfigDict()
  mesh.data = -1                   # sizes; exactly one may be -1 (= the remaining devices)
  mesh.fsdp = 1
  mesh.tensor = 1
  mesh.preset = "fsdp"             # key of SHARDING_PRESETS
  mesh.rules = ()                  # ((logical, mesh_axes), ...) overriding the preset

  # --- data ------------------------------------------------------------------------------------------
  data = c.data = ml_collections.ConfigDict()
  data.source = "moving_mnist"     # moving_mnist | gratings | camera_motion (embedded, labelled) |
                                   # video_folder | array_record | tfds
  data.num_frames = 16
  data.image_size = 224
  data.path = ""                   # folder / shard pattern / tfds name for file-backed sources
  data.num_clips = 4096            # size of the embedded synthetic datasets (clips per split)
  # Mixture: a tuple of dicts, each overriding data fields for one source plus its "weight" (and
  # an optional "name" for the per-source metrics), e.g. ({"source": "moving_mnist", "weight": 0.7},
  # {"source": "video_folder", "path": "/videos", "weight": 0.3}). Empty: the one source above.
  data.sources = ()
  # grain worker processes: "auto" (0 for the embedded sources, else one per core left over after
  # the main process), or a count (0: decode in read threads of the main process). Any int works.
  data.num_workers = ml_collections.FieldReference("auto", field_type=object)
  data.prefetch = 2                # batches prefetched per worker
  # grain read threads per process: "auto" (4 where the main process decodes itself, 1 in each
  # worker process: the workers are the parallelism there, and more threads only contend for the
  # GIL; docs/data.md), or a count >= 1.
  data.read_threads = ml_collections.FieldReference("auto", field_type=object)
  data.num_digits = 1              # moving_mnist: digits per clip (labels describe the first)
  # Sampling and augmentation of real videos (video_folder / array_record / tfds), VideoMAE habits:
  data.frame_stride = 2            # take every n-th frame
  data.temporal_offset = "random"  # random | center: where the clip starts in the video
  data.crop = "random_resized"     # random_resized | center
  data.crop_scale = (0.3, 1.0)     # area fraction range of the random resized crop
  data.crop_aspect = (3 / 4, 4 / 3)
  data.flip = True                 # random horizontal flip
  data.clips_per_video = 1         # clips sampled per decoded video (amortises decoding)
  data.labels_csv = ""             # video_folder: optional "path,label" CSV (else sub-folder names)
  data.layout = "folder"           # video_folder: folder | kinetics | ssv2 | ucf101 | hmdb51 (labels
                                   # and splits from the dataset's published annotation files)
  data.annotations = ""            # layout != folder: the annotation folder (or Kinetics CSV/JSON)
  data.split_id = 1                # ucf101 / hmdb51: official split 1, 2 or 3
  data.probe_files = True          # video_folder: open every file once at start, skip bad ones
  data.max_decode_frames = 1024    # clips are drawn from the first this-many frames of a file
  data.tfds_data_dir = ""          # tfds: data_dir of the prepared dataset
  data.tfds_video_key = "video"    # tfds: feature holding encoded video bytes
  data.tfds_label_key = "label"
  return c


def vit_config(size: str) -> ml_collections.ConfigDict:
  """base_config() with the encoder dims of a named size from VIT_SIZES."""
  c = base_config()
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = VIT_SIZES[size]
  return c


def check_variant(variant: str, variants) -> None:
  """A config file's `get_config(variant)` argument must be one of its variants."""
  if variant not in variants:
    raise ValueError(f"unknown variant {variant!r}; use one of {tuple(variants)}")


def enable_layerlock(c, *, pixel_steps: int, interval: int, max_frozen: int,
                     mini_warmup_steps: int):
  """The `:layerlock` variant of a size config: 3-D RoPE (10/25/25% of the width along t/h/w,
  after the first norm), latent target, one block frozen per event (jump 1) up to `max_frozen`,
  first freeze at the end of the pixel stage. [I: the papers give the schedule only for ViT-G;
  other sizes are scaled so that the last freeze lands at ~90% of training.]"""
  c.model.posemb = "rope"
  ll = c.layerlock
  ll.enabled = True
  ll.target = "latent"
  ll.jump = 1
  ll.pixel_steps = pixel_steps
  ll.interval = interval
  ll.max_frozen = max_frozen
  ll.mini_warmup_steps = mini_warmup_steps
  return c
