"""setuptools hook for the two C extensions; all metadata lives in pyproject.toml.

- ``qmplex._lines``: the line splitter, built by cffi from ``build.py``;
- ``qmplex._deliver``: the protocol's loop over routed event lines (CPython API).
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["build.py:ffibuilder"],
    ext_modules=[
        Extension("qmplex._deliver", sources=["csrc/deliver.c"], extra_compile_args=["-O2"]),
    ],
)
