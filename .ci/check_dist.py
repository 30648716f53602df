#!/usr/bin/env python3
"""List and check what ``python -P -m build`` made: one sdist and one abi3 wheel.

Usage::

    python .ci/check_dist.py DIST_DIR

The sdist must hold exactly what a build, a packager and a reader need: the build files
(``pyproject.toml``, ``setup.py``, ``build.py``, ``MANIFEST.in``), ``LICENSE``,
``README.md``, ``CHANGELOG.md``, and every file git tracks under ``csrc/``,
``src/qmplex/`` and ``tests/``, plus what setuptools generates (``PKG-INFO``,
``setup.cfg``, ``src/qmplex.egg-info/``). Anything else (``bench/``, ``fuzz/`` and
its corpus, ``docs/``, ``.venv``, build output, bytecode) fails the check.

The wheel must be tagged ``cp3N-abi3`` (``3.N`` from ``Requires-Python``) and hold
every tracked file of ``src/qmplex/`` (stubs and ``py.typed`` included), the stable-ABI
modules ``qmplex/_lines.abi3.so`` (the splitter) and ``qmplex/_decode.abi3.so`` (the
protocol's decoder), no other compiled module, and metadata with the
license, readme, URLs, keywords and a classifier for each supported Python.

Run from a git checkout (the tracked files are the reference). Exit status 1, with
every problem listed, when a check fails.
"""

from __future__ import annotations

import email.message
import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_FILES = ("pyproject.toml", "setup.py", "build.py", "MANIFEST.in", "LICENSE", "README.md",
             "CHANGELOG.md")
TREES = ("csrc/", "src/qmplex/", "tests/")
SDIST_GENERATED = ("PKG-INFO", "setup.cfg")
SDIST_GENERATED_DIR = "src/qmplex.egg-info/"
DIST_INFO_FILES = ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt",
                   "licenses/LICENSE")
STABLE_ABI_MODULES = ("qmplex/_lines.abi3.so", "qmplex/_decode.abi3.so")


def tracked() -> list[str]:
    """The files git tracks that belong in the sdist."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    files = [f for f in out.split("\0") if f]
    missing = [f for f in TOP_FILES if f not in files]
    if missing:
        sys.exit(f"check_dist: not tracked by git: {', '.join(missing)}")
    return [f for f in files if f in TOP_FILES or f.startswith(TREES)]


def parse_metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def python_versions(meta: email.message.Message) -> tuple[int, list[int]]:
    """(oldest minor version from Requires-Python, minors from the classifiers)."""
    match = re.fullmatch(r">=\s*3\.(\d+)", meta.get("Requires-Python", "").strip())
    if match is None:
        raise ValueError(f"Requires-Python is not '>=3.N': {meta.get('Requires-Python')!r}")
    minors = sorted(
        int(m.group(1))
        for c in meta.get_all("Classifier", [])
        if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))
    )
    return int(match.group(1)), minors


def show(title: str, names: list[str]) -> None:
    print(f"{title}: {len(names)} files")
    groups: dict[str, int] = {}
    for name in names:
        head = name.split("/", 1)[0] if "/" in name else name
        if name.startswith(("src/", "qmplex/")) or "/" not in name:
            print(f"  {name}")
        else:
            groups[head] = groups.get(head, 0) + 1
    for head, count in sorted(groups.items()):
        print(f"  {head}/ ({count} files)")


def check_sdist(path: Path, files: list[str], problems: list[str]) -> email.message.Message:
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        prefix = path.name.removesuffix(".tar.gz") + "/"
        names = []
        for m in members:
            if not m.name.startswith(prefix):
                problems.append(f"sdist: {m.name} is outside {prefix}")
                continue
            names.append(m.name.removeprefix(prefix))
        pkg_info = tar.extractfile(prefix + "PKG-INFO")
        meta = parse_metadata(pkg_info.read().decode() if pkg_info else "")
    show(f"sdist {path.name}", sorted(names))
    have = set(names)
    for f in files:
        if f not in have:
            problems.append(f"sdist: missing {f}")
    allowed = set(files) | set(SDIST_GENERATED)
    for name in sorted(have - allowed):
        if not name.startswith(SDIST_GENERATED_DIR):
            problems.append(f"sdist: holds {name}, which a build does not need")
    return meta


def check_wheel(path: Path, files: list[str], meta: email.message.Message,
                problems: list[str]) -> None:
    version = meta["Version"]
    oldest, minors = python_versions(meta)
    match = re.fullmatch(rf"qmplex-{re.escape(version)}-(cp3\d+)-abi3-(\w+)\.whl", path.name)
    if match is None:
        problems.append(f"wheel: {path.name} is not qmplex-{version}-cp3N-abi3-PLATFORM.whl")
    elif match.group(1) != f"cp3{oldest}":
        problems.append(f"wheel: tagged {match.group(1)}, but Requires-Python says 3.{oldest}")
    with zipfile.ZipFile(path) as whl:
        names = sorted(n for n in whl.namelist() if not n.endswith("/"))
        dist_info = f"qmplex-{version}.dist-info/"
        wheel_meta = parse_metadata(whl.read(dist_info + "WHEEL").decode())
        whl_meta = parse_metadata(whl.read(dist_info + "METADATA").decode())
    show(f"wheel {path.name}", names)

    expected = {"qmplex/" + f.removeprefix("src/qmplex/") for f in files
                if f.startswith("src/qmplex/")}
    expected.update(STABLE_ABI_MODULES)
    expected.update(dist_info + f for f in DIST_INFO_FILES)
    have = set(names)
    for name in sorted(expected - have):
        problems.append(f"wheel: missing {name}")
    for name in sorted(have - expected):
        why = ("a compiled module off the stable ABI" if name.endswith((".so", ".pyd"))
               else "not a tracked file of src/qmplex")
        problems.append(f"wheel: holds {name} ({why})")
    if wheel_meta.get("Root-Is-Purelib", "").strip() != "false":
        problems.append("wheel: Root-Is-Purelib should be false (it holds a C extension)")

    # The metadata a release needs.
    for field in ("License-Expression", "License-File", "Project-URL", "Keywords",
                  "Summary", "Requires-Python"):
        if not whl_meta.get(field):
            problems.append(f"wheel: METADATA has no {field}")
    if whl_meta.get("Description-Content-Type") != "text/markdown":
        problems.append("wheel: METADATA has no markdown readme")
    if len(whl_meta.get_payload() or "") < 1000:
        problems.append("wheel: METADATA has no readme text")
    if not minors or minors[0] != oldest or minors != list(range(minors[0], minors[-1] + 1)):
        problems.append(f"wheel: Python classifiers 3.{minors} do not run without gaps from "
                        f"Requires-Python's 3.{oldest}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dist = Path(sys.argv[1])
    sdists = sorted(dist.glob("qmplex-*.tar.gz"))
    wheels = sorted(dist.glob("qmplex-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"check_dist: want one sdist and one wheel in {dist}, found "
              f"{[p.name for p in sdists + wheels]}", file=sys.stderr)
        return 1
    files = tracked()
    problems: list[str] = []
    meta = check_sdist(sdists[0], files, problems)
    check_wheel(wheels[0], files, meta, problems)
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if problems:
        return 1
    oldest, minors = python_versions(meta)
    print(f"check_dist: ok (one abi3 wheel for CPython {', '.join(f'3.{m}' for m in minors)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
