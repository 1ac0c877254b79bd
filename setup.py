"""Installable benchmark suite for self-supervised medical image classification."""
import setuptools

setuptools.setup(
    name="medssl-bench",
    version="0.1.0",
    description=(
        "Benchmark for self-supervised pretraining (SimCLR, MICLe) on chest X-ray and "
        "dermatology classification with scarce labels and shifted test sets."
    ),
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["benchmark*", "baselines*", "medssl_common*", "tfds_builders*"]),
    include_package_data=True,
    package_data={"tfds_builders": ["*/README.md", "*/CITATIONS.bib", "*/dummy_data/**/*",
                                    "folder_task/task.schema.json"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tensorflow-datasets imports it to build a dataset, without requiring it
        "absl-py",
        "numpy",
        "pandas",
        "pillow",
        "scikit-learn>=1.8",  # the linear probe (benchmark.harness.linear_probe)
        "threadpoolctl",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "dill", "import-linter>=2.1"],
    },
)
