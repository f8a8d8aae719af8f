"""Package layout beyond what pyproject.toml can say: the wheel's s2policy/configs/ is built from the top-level
configs/ folder (the single source of the YAML configs), so an installed package runs from any directory."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["s2policy", "s2policy.*", "envs", "envs.*"]), "s2policy.configs"],
    package_dir={"s2policy.configs": "configs"},
)
