"""Docs that cannot rot: every ```bash and ```python block of README.md and docs/*.md runs, as written, and must
succeed. The rules (docs/ci.md, "The docs test"):

- Each page runs in a fresh folder of its own, its blocks in order, so a later block may use what an earlier one
  wrote (``runs/``, ``reports/``). The folder holds what the pages call the user's own files: ``my-model/``,
  ``out/checkpoint-100/``, ``out/checkpoint-200/`` (tiny random LLaMA checkpoints with a byte tokenizer),
  ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a link to the embedded model's file), ``notes.txt`` and ``books/*.txt``, and
  ``.venv``, a link to the environment the tests run in, which ``install.sh`` made.
- Stated substitutions, and no others: a ``bash install.sh`` line is not run (``.venv`` is that install); every
  ``--limit N`` and ``limit=N`` becomes 1 document per task.
- No network (``HF_HUB_OFFLINE=1``), no data folder (``LLAMABENCH_DATA`` unset), one request and model cache for
  the whole session (``LLAMABENCH_CACHE``), so the embedded GGUF is dequantised once.
- A block whose first line is ``# not run by the tests: <reason>`` is skipped; the reason may not be empty.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "# not run by the tests:"
LANGUAGES = ("bash", "python")
BLOCK_SECONDS = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def skip_reason(self) -> str | None:
        first = self.code.lstrip("\n").split("\n", 1)[0].strip()
        return first[len(SKIP) :].strip() if first.startswith(SKIP) else None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in the languages run here (indented fences in list items included)."""
    blocks, lines = [], page.read_text().split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language, start = opening.group(1), opening.group(2), index
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index])
            index += 1
        index += 1
        if language in LANGUAGES:
            blocks.append(Block(page, start + 1, language, textwrap.dedent("\n".join(body)) + "\n"))
    return blocks


def substituted(block: Block, as_written: bool = False) -> str:
    """The block as the test runs it: the stated substitutions, nothing else (``as_written``: the limits kept, to
    measure the times the pages quote)."""
    code = re.sub(r"^\s*bash install\.sh\b.*$", ": install.sh already ran", block.code, flags=re.MULTILINE)
    if as_written:
        return code
    code = re.sub(r"--limit[ =]\d+", "--limit 1", code)
    return re.sub(r"\blimit=\d+", "limit=1", code)


@pytest.fixture(scope="session")
def docs_assets(tmp_path_factory):
    """The user's own files of the pages, made once: three distinct tiny checkpoints, text files."""
    from conftest import save_tiny_model

    from llamabench.backends.loading.model_source import smollm2_gguf_path

    root = tmp_path_factory.mktemp("docs_assets")
    save_tiny_model(root / "my-model", seed=0)
    save_tiny_model(root / "out" / "checkpoint-100", seed=1)
    save_tiny_model(root / "out" / "checkpoint-200", seed=2)
    (root / "notes.txt").write_text("The meeting moved to Tuesday.\nBring the slides and the budget.\n")
    (root / "books").mkdir()
    (root / "books" / "a.txt").write_text("It was a bright cold day in April.\nThe clocks were striking.\n")
    (root / "books" / "b.txt").write_text("Call me Ishmael.\nSome years ago, never mind how long.\n")
    return root, smollm2_gguf_path(), tmp_path_factory.mktemp("docs_cache")


def sandbox(tmp_path: Path, assets) -> tuple[Path, dict]:
    root, gguf, cache = assets
    for item in root.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)
    (tmp_path / gguf.name).symlink_to(gguf)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {key: value for key, value in os.environ.items() if key not in ("LLAMABENCH_DATA", "LLAMABENCH_TASKS")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        LLAMABENCH_CACHE=str(cache),
        PATH=f"{tmp_path / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return tmp_path, env


def run_block(block: Block, folder: Path, env: dict) -> None:
    """Run one block in ``folder``. ``LLAMABENCH_DOCS_AS_WRITTEN=1`` keeps the pages' limits and
    ``LLAMABENCH_DOCS_TIMES=FILE`` appends each block's wall time to FILE: how the pages' timings are measured."""
    code = substituted(block, as_written=os.environ.get("LLAMABENCH_DOCS_AS_WRITTEN") == "1")
    started = time.perf_counter()
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        (folder / "docs_block.py").write_text(code)
        command = [str(folder / ".venv" / "bin" / "python"), "docs_block.py"]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_SECONDS)
    if os.environ.get("LLAMABENCH_DOCS_TIMES"):
        with open(os.environ["LLAMABENCH_DOCS_TIMES"], "a") as times:
            times.write(f"{block.where()} {time.perf_counter() - started:.1f} s\n")
    assert done.returncode == 0, f"{block.where()} failed (exit {done.returncode}):\n{code}\n{done.stderr[-3000:]}"


def test_every_page_has_been_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "tasks.md", "metrics.md", "ci.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_skipped_blocks_say_why(page):
    for block in code_blocks(page):
        assert block.skip_reason != "", f"{block.where()}: '{SKIP}' needs a reason after the colon"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_block_runs_as_written(page, docs_assets, tmp_path):
    runnable = [block for block in code_blocks(page) if block.skip_reason is None]
    if not runnable:
        pytest.skip(f"{page.name} has no block to run")
    folder, env = sandbox(tmp_path, docs_assets)
    for block in runnable:
        run_block(block, folder, env)


def test_the_substitutions_are_the_stated_ones():
    block = Block(ROOT / "README.md", 1, "bash", "bash install.sh vllm\nllamabench run --limit 200 --tasks qa\n")
    assert substituted(block) == ": install.sh already ran\nllamabench run --limit 1 --tasks qa\n"
    python = Block(ROOT / "README.md", 1, "python", "f(limit=50, no_limit=True)\n")
    assert substituted(python) == "f(limit=1, no_limit=True)\n"


def test_the_readme_stays_readable_top_to_bottom():
    """At most 250 lines, and it links every page of docs/ (a page nobody can find from it would rot unseen)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
