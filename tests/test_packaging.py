"""The package list in pyproject.toml names every folder of Python modules under llamabench/: a folder left out
installs from a checkout in editable mode (the whole tree is on the path) but is missing from a wheel, so a
`pip install .` would fail at its first import."""

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_python_folder_is_a_listed_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(folder.relative_to(REPO).parts)
        for folder in (REPO / "llamabench").rglob("*")
        if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
    }
    assert not folders - listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"
