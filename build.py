"""Build script for ``qmplex._lines`` (cffi, out-of-line API mode), and the development
build of both C extensions.

Used in two ways:

* by setuptools, through ``setup(cffi_modules=["build.py:ffibuilder"])``, whenever the
  package is built or installed (``pip install .``, ``pip install -e .``); setup.py
  builds ``qmplex._deliver`` (``csrc/deliver.c``, CPython API) itself;
* directly, ``python build.py``, for a development build that compiles both modules
  into ``src/qmplex/`` next to ``framing.py``.

The ``cdef`` is read from the declarations between the ``QMPLEX_CDEF_BEGIN`` and
``QMPLEX_CDEF_END`` markers of ``csrc/lines.h``, so the header is the single source of
truth for both the compiler and cffi.

Environment:
    QMPLEX_SANITIZE=1: compile and link with AddressSanitizer and UndefinedBehaviorSanitizer
        (UBSan findings abort). Python itself is not instrumented, so preload the runtime::

            QMPLEX_SANITIZE=1 python build.py
            LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
                python -m pytest tests/test_framing.py tests/property
"""

from __future__ import annotations

import os
import re
import shutil

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "csrc", "lines.h")

_CDEF_RE = re.compile(r"/\* QMPLEX_CDEF_BEGIN \*/(?P<decls>.*?)/\* QMPLEX_CDEF_END \*/", re.DOTALL)


def read_cdef(path: str = HEADER) -> str:
    """Return the cdef-clean declarations between the markers of ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    match = _CDEF_RE.search(text)
    if match is None:
        raise RuntimeError(f"{path}: QMPLEX_CDEF_BEGIN/END markers not found")
    return match.group("decls")


def _flags() -> tuple[list[str], list[str]]:
    compile_args = ["-O2"]
    link_args: list[str] = []
    if os.environ.get("QMPLEX_SANITIZE", "") == "1":
        sanitize = [
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
        ]
        compile_args += sanitize
        link_args += sanitize
    return compile_args, link_args


def make_builder(root: str | None = None) -> FFI:
    """Return an ``FFI`` builder for ``qmplex._lines``.

    Args:
        root: when given, source paths are made absolute under it (for
            ``FFI.compile``, which changes directory); setuptools wants them relative.
    """
    compile_args, link_args = _flags()

    def path(rel: str) -> str:
        return rel if root is None else os.path.join(root, rel)

    builder = FFI()
    builder.cdef(read_cdef())
    builder.set_source(
        "qmplex._lines",
        '#include "lines.h"',
        sources=[path("csrc/lines.c")],
        include_dirs=[path("csrc")],
        depends=[path("csrc/lines.h")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return builder


# The object setuptools picks up via cffi_modules. Its paths are relative to the project
# root, where pip runs the build.
ffibuilder = make_builder()


def _remove_builds(package: str, module: str) -> None:
    # Python prefers the cpython-3XX suffix over abi3: remove every earlier build (from
    # here or from ``pip install -e``) so that a stale one can never shadow this one.
    for name in os.listdir(package):
        if name.startswith(module + ".") and name.endswith((".so", ".pyd")):
            os.remove(os.path.join(package, name))


def _dev_build_deliver(package: str, tmpdir: str) -> str:
    """Compile ``qmplex._deliver`` into ``package``; return its path."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    compile_args, link_args = _flags()
    ext = Extension("qmplex._deliver", sources=[os.path.join(HERE, "csrc", "deliver.c")],
                    extra_compile_args=compile_args, extra_link_args=link_args)
    cmd = build_ext(Distribution({"name": "qmplex", "ext_modules": [ext]}))
    cmd.build_temp = tmpdir
    cmd.build_lib = os.path.join(tmpdir, "lib")
    cmd.ensure_finalized()
    cmd.run()
    built = cmd.get_ext_fullpath(ext.name)
    _remove_builds(package, "_deliver")
    target = os.path.join(package, os.path.basename(built))
    shutil.copyfile(built, target)
    return target


def _dev_build() -> None:
    """Compile under build/dev/ and copy the extensions into src/qmplex/."""
    tmpdir = os.path.join(HERE, "build", "dev")
    built = make_builder(HERE).compile(tmpdir=tmpdir, verbose=True)
    package = os.path.join(HERE, "src", "qmplex")
    _remove_builds(package, "_lines")
    target = os.path.join(package, os.path.basename(built))
    shutil.copyfile(built, target)
    print(f"built {target}")
    print(f"built {_dev_build_deliver(package, tmpdir)}")


if __name__ == "__main__":
    _dev_build()
