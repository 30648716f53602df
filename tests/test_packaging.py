"""The version is written once (``pyproject.toml``) and ``qmplex.__version__`` follows it.

What the sdist and the wheel hold is checked by ``.ci/check_dist.py`` on the built files.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import qmplex


def test_version_comes_from_the_package_metadata() -> None:
    try:
        expected = importlib.metadata.version("qmplex")
    except importlib.metadata.PackageNotFoundError:
        expected = qmplex._source_tree_version()
    assert qmplex.__version__ == expected
    assert qmplex.__version__ != "0+unknown"


def _tree(tmp_path: Path, pyproject: str | None) -> str:
    package = tmp_path / "src" / "qmplex"
    package.mkdir(parents=True)
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return str(package / "__init__.py")


@pytest.mark.parametrize(
    ("pyproject", "expected"),
    [
        ('[project]\nname = "qmplex"\nversion = "1.2.3"\n', "1.2.3"),
        ('[project]\nname = "other"\nversion = "1.2.3"\n', "0+unknown"),
        ('[project]\nname = "qmplex"\ndynamic = ["version"]\n', "0+unknown"),
        (None, "0+unknown"),
    ],
)
def test_source_tree_version_reads_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyproject: str | None, expected: str
) -> None:
    monkeypatch.setattr(qmplex, "__file__", _tree(tmp_path, pyproject))
    assert qmplex._source_tree_version() == expected
