"""What pyproject.toml cannot say by itself: the package list.

The folders connectors/, streams/ and schemas/ are installed as sub-packages of ``bizbus`` (see
``package-dir`` in pyproject.toml), so setuptools' automatic discovery would name them wrongly. Every package
below the four roots is found here, so adding a connector or flow folder needs no edit outside that folder.
"""

from setuptools import find_packages, setup

ROOTS = {"bizbus": "bizbus", "bizbus.connectors": "connectors", "bizbus.streams": "streams", "bizbus.schemas": "schemas"}

packages: list[str] = []
for name, folder in ROOTS.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages)
