"""setuptools hook for the C extensions; all metadata lives in pyproject.toml.

What is compiled, with which flags, and whether a failed compilation is fatal is decided
in ``build.py`` (``setup_arguments()``; see its docstring for ``QMPLEX_BUILD_C``). By
default the C line splitter and the C decoder are built on the stable ABI (an ``abi3``
wheel), and a machine without a compiler still installs qmplex, which then runs on its
pure-Python paths and says so once.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

from setuptools import setup


def _build_script() -> ModuleType:
    # Loaded under its own name: "build" would be PyPA's build module.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build.py")
    spec = importlib.util.spec_from_file_location("qmplex_build_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup(**_build_script().setup_arguments())
