"""docs/architecture.md is the package's map: every package folder and every top-level module is on it (a new
folder or module without its line fails here, as a README link without its page fails test_readme)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llamabench"


def _map() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return re.search(r"```text\n(.*?)```", text, re.DOTALL).group(1)


def test_every_package_folder_is_on_the_architecture_map():
    names = set(re.findall(r"([A-Za-z_]+)/", _map()))
    folders = {path for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__"}
    missing = sorted(str(path.relative_to(ROOT)) for path in folders if path.name not in names)
    assert not missing, f"add these folders to docs/architecture.md: {missing}"


def test_every_top_level_module_is_on_the_architecture_map():
    text = _map()
    missing = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py" and path.name not in text)
    assert not missing, f"add these modules to docs/architecture.md: {missing}"
