"""Install the TENT and ProDA reproductions: `pip install -e ".[test]"`."""
from pathlib import Path

from setuptools import find_packages, setup


def read_requirements() -> list:
    """Requirements from requirements.txt, one per line, comments dropped."""
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="tent-proda",
    version="0.1.0",
    description="Faithful, modern PyTorch reproductions of TENT (ICLR 2021) and ProDA (CVPR 2021)",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["dacommon", "dacommon.*", "tent", "tent.*", "proda", "proda.*"]),
    # the offline benchmarks' shipped source models (tent/models.py checks each file's sha256) and
    # mariodoebler's ImageNet-C 50,000-image order (tent/imagenetc.py checks its sha256)
    package_data={"tent": ["weights/*.pt", "weights/manifest.json", "imagenet_val_50k_order.npy"]},
    install_requires=read_requirements(),
    extras_require={"test": ["pytest>=7"]},
)
