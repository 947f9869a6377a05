"""Packaging for captum-fvit.

The pins are the set tested on the project's CPU machines (Python 3.11). ``torch`` must be
pinned in every requirement set: an unpinned torch makes pip pull a full CUDA stack.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "timm==1.0.31",
    "captum==0.9.0",
    "diffusers==0.42.1",
    "numpy>=2.0,<3",
    "scipy>=1.11",
    "statsmodels>=0.14",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "safetensors>=0.4",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8",
        "transformers==5.23.0",
        # OpenAI's own guided-diffusion code: the reference the ADM converter is tested against.
        "guided-diffusion-sdk==1.0.0",
        "blobfile>=2",
        # Independent references and integrations exercised by the tests.
        "scikit-learn>=1.3",
        "h5py>=3.8",
        "quantus==0.6.0",
        # The suite builds the docs (sphinx-build -W), which executes every tutorial
        # (sphinx-gallery) and draws the guide's figures.
        "sphinx>=8",
        "sphinx-gallery==0.22.1",
    ],
    "docs": [
        "sphinx>=8",
        "sphinx-gallery==0.22.1",
    ],
}

setup(
    name="captum-fvit",
    version="0.1.0.dev0",
    description=(
        "Faithful Vision Transformer explanations for Captum: denoised diffusion smoothing "
        "(DDS) of attention maps and certified faithful regions."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["captum_fvit", "captum_fvit.*"]),
    include_package_data=True,
    package_data={"captum_fvit": ["py.typed", "models/weights/*", "models/weights/*/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["captum-fvit=captum_fvit.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Intended Audience :: Science/Research",
    ],
)
