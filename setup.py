"""Install divlab: `pip install -e .` (library) or `pip install -e ".[test]"` (with tests).

Accelerators: the default `jax` wheel runs on CPU. For a GPU install the CUDA
wheels first (`pip install -U "jax[cuda12]"`), for a TPU VM `pip install -U
"jax[tpu]"`; divlab's code is the same on every backend.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.7.0",
    "flax>=0.11.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11.0",
    "tensorflow-datasets>=4.9.9",
    "importlib_resources>=6.0",  # tfds needs it when used without TensorFlow
    "ml-collections>=1.0.0",
    "chex>=0.1.90",
    "ott-jax>=0.5.0",
    "grain>=0.2.12",
    "array-record>=0.8",  # divlab.data.records reads array_record shards directly
    "scikit-learn>=1.5",
    "scipy>=1.11",  # divlab.eval.membership (ROC statistics)
    "mnist1d>=0.0.2",
    "absl-py>=2.1",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "numpy>=1.26",
]

EXTRAS = {
    "test": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",
        "hypothesis>=6.100",
        "scipy>=1.11",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
    ],
    "notebooks": ["jupyter", "ipykernel>=6.29"],
}

setup(
    name="divlab",
    version="0.1.0",
    description="Divergence-based learning in JAX: divergences, losses, one training layer, "
    "paper reproductions.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["divlab", "divlab.*", "experiments", "experiments.*",
                                    "configs", "configs.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["divlab-run=divlab.run:main"]},
)
