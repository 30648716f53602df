"""Build script for qmplex's C speed-ups; all metadata lives in ``pyproject.toml``.

What is compiled:

* ``qmplex._lines``: the line splitter, built by cffi (out-of-line API mode) from
  ``csrc/lines.c``, on the stable ABI (``py_limited_api``): one ``.abi3.so`` serves every
  CPython the package supports, and the wheel is tagged ``cp3XX-abi3`` (``cp3XX`` from
  ``requires-python``);
* ``STABLE_ABI_EXTENSIONS``: extensions written against CPython's Limited API of that
  oldest version (``Py_LIMITED_API``), built by setuptools into ``.abi3.so`` modules as
  well, so they go into the same abi3 wheel: ``qmplex._decode``, the protocol's routed
  event lines and in-flight replies decoded in C (``csrc/decode.c``). A free-threaded
  interpreter has no stable ABI: there they are built against its full API.

Used in two ways:

* by setuptools: ``setup.py`` loads this file and calls ``setup_arguments()``, and
  ``cffi_modules=["build.py:ffibuilder"]`` hooks the splitter in, whenever the package
  is built or installed (``pip install .``, ``python -P -m build``);
* directly, ``python build.py``: a development build that compiles the splitter and
  every ``STABLE_ABI_EXTENSIONS`` entry into ``src/qmplex/`` (a failure there is always
  an error).

The ``cdef`` is read from the declarations between the ``QMPLEX_CDEF_BEGIN`` and
``QMPLEX_CDEF_END`` markers of ``csrc/lines.h``, so the header is the single source of
truth for both the compiler and cffi.

Environment (read when the package is built or installed):
    QMPLEX_BUILD_C=auto (the default): compile the C parts; when compiling fails (no
        compiler, no Python headers), the install goes on without them, and qmplex warns
        once at run time that it is using its pure-Python paths.
    QMPLEX_BUILD_C=yes: a failed compilation fails the build (release builds and CI,
        so that a broken C build can never pass unnoticed).
    QMPLEX_BUILD_C=no: compile nothing (a pure-Python ``py3-none-any`` wheel).
    QMPLEX_SANITIZE=1: compile and link with AddressSanitizer and UndefinedBehaviorSanitizer
        (UBSan findings abort). Python itself is not instrumented, so preload the runtime::

            QMPLEX_SANITIZE=1 python build.py
            LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
                python -m pytest tests/test_framing.py tests/test_decode.py tests/property
"""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
from typing import Any

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "csrc", "lines.h")

#: Extensions on CPython's Limited API (abi3), built by setuptools: module name -> its C
#: source, relative to this directory. They may include ``csrc/lines.h``. Built in every
#: build that builds C, like the splitter.
STABLE_ABI_EXTENSIONS: dict[str, str] = {
    "qmplex._decode": "csrc/decode.c",
}

_CDEF_RE = re.compile(r"/\* QMPLEX_CDEF_BEGIN \*/(?P<decls>.*?)/\* QMPLEX_CDEF_END \*/", re.DOTALL)
_BUILD_C_MODES = ("auto", "yes", "no")


def read_cdef(path: str = HEADER) -> str:
    """Return the cdef-clean declarations between the markers of ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    match = _CDEF_RE.search(text)
    if match is None:
        raise RuntimeError(f"{path}: QMPLEX_CDEF_BEGIN/END markers not found")
    return match.group("decls")


def build_c_mode() -> str:
    """``QMPLEX_BUILD_C``: ``"auto"`` (the default), ``"yes"`` or ``"no"``."""
    mode = os.environ.get("QMPLEX_BUILD_C", "").strip().lower() or "auto"
    if mode not in _BUILD_C_MODES:
        raise RuntimeError(f"QMPLEX_BUILD_C must be one of {', '.join(_BUILD_C_MODES)}, "
                           f"not {mode!r}")
    return mode


def abi3_tag(pyproject: str = os.path.join(HERE, "pyproject.toml")) -> str:
    """The oldest CPython of ``requires-python`` as a wheel tag (``">=3.10"`` -> ``cp310``)."""
    with open(pyproject, encoding="utf-8") as f:
        match = re.search(r'^requires-python\s*=\s*">=\s*3\.(\d+)"', f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f'{pyproject}: no requires-python = ">=3.N" line')
    return f"cp3{match.group(1)}"


def limited_api_version(tag: str | None = None) -> str:
    """``Py_LIMITED_API`` for the abi3 tag (``"cp310"`` -> ``"0x030A0000"``)."""
    minor = int((tag or abi3_tag()).removeprefix("cp3"))
    return f"0x03{minor:02X}0000"


def free_threaded() -> bool:
    """Whether the building interpreter is a free-threaded build (no stable ABI there)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


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


def make_builder(root: str | None = None, *, optional: bool = False) -> FFI:
    """Return an ``FFI`` builder for ``qmplex._lines``.

    Args:
        root: when given, source paths are made absolute under it (for
            ``FFI.compile``, which changes directory); setuptools wants them relative.
        optional: a failed compilation only warns (setuptools' ``Extension.optional``).
    """
    compile_args, link_args = _flags()

    def path(rel: str) -> str:
        return rel if root is None else os.path.join(root, rel)

    builder = FFI()
    builder.cdef(read_cdef())
    extra: dict[str, Any] = {"optional": True} if optional else {}
    builder.set_source(
        "qmplex._lines",
        '#include "lines.h"',
        sources=[path("csrc/lines.c")],
        include_dirs=[path("csrc")],
        depends=[path("csrc/lines.h")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        # The stable ABI: cffi's generated C then defines Py_LIMITED_API.
        py_limited_api=True,
        **extra,
    )
    return builder


def stable_abi_extensions(root: str | None = None, *, optional: bool = False) -> list[Any]:
    """``setuptools.Extension`` objects for every ``STABLE_ABI_EXTENSIONS`` entry: abi3
    modules against the Limited API of the oldest supported CPython (the full API on a
    free-threaded interpreter, which has no abi3)."""
    from setuptools import Extension

    compile_args, link_args = _flags()
    limited = not free_threaded()

    def path(rel: str) -> str:
        return rel if root is None else os.path.join(root, rel)

    return [
        Extension(name, sources=[path(source)], include_dirs=[path("csrc")],
                  depends=[path("csrc/lines.h")],
                  define_macros=[("Py_LIMITED_API", limited_api_version())] if limited else [],
                  py_limited_api=limited,
                  extra_compile_args=compile_args, extra_link_args=link_args,
                  optional=optional)
        for name, source in STABLE_ABI_EXTENSIONS.items()
    ]


def setup_arguments() -> dict[str, Any]:
    """The C-related keyword arguments of ``setup()``, as the environment asks."""
    mode = build_c_mode()
    if mode == "no":
        return {}
    optional = mode == "auto"
    args: dict[str, Any] = {"cffi_modules": ["build.py:ffibuilder"],
                            "ext_modules": stable_abi_extensions(optional=optional)}
    if not free_threaded():
        # Only stable-ABI code in the wheel: tag it cp3XX-abi3, for every later CPython.
        args["options"] = {"bdist_wheel": {"py_limited_api": abi3_tag()}}
    return args


# The object setuptools picks up via cffi_modules. Its paths are relative to the project
# root, where pip runs the build.
ffibuilder = make_builder(optional=build_c_mode() == "auto")


def _remove_builds(package: str, module: str) -> None:
    # Python prefers the cpython-3XX suffix over abi3: remove every earlier build (from
    # here or from ``pip install -e``) so that a stale one can never shadow this one.
    for name in os.listdir(package):
        if name.startswith(module + ".") and name.endswith((".so", ".pyd")):
            os.remove(os.path.join(package, name))


def _dev_build_extensions(package: str, tmpdir: str) -> list[str]:
    """Compile every ``STABLE_ABI_EXTENSIONS`` entry into ``package``; return their
    paths."""
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    targets = []
    for ext in stable_abi_extensions(HERE):
        cmd = build_ext(Distribution({"name": "qmplex", "ext_modules": [ext]}))
        cmd.build_temp = tmpdir
        cmd.build_lib = os.path.join(tmpdir, "lib")
        cmd.force = True  # a changed header or QMPLEX_SANITIZE must rebuild
        cmd.ensure_finalized()
        cmd.run()
        built = cmd.get_ext_fullpath(ext.name)
        _remove_builds(package, ext.name.rpartition(".")[2])
        target = os.path.join(package, os.path.basename(built))
        shutil.copyfile(built, target)
        targets.append(target)
    return targets


def _dev_build() -> None:
    """Compile under build/dev/ and copy the extensions into src/qmplex/."""
    tmpdir = os.path.join(HERE, "build", "dev")
    built = make_builder(HERE).compile(tmpdir=tmpdir, verbose=True)
    package = os.path.join(HERE, "src", "qmplex")
    _remove_builds(package, "_lines")
    target = os.path.join(package, os.path.basename(built))
    shutil.copyfile(built, target)
    print(f"built {target}")
    for target in _dev_build_extensions(package, tmpdir):
        print(f"built {target}")


if __name__ == "__main__":
    _dev_build()
