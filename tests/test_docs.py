"""Docs that cannot rot: every ```bash and ```python block of README.md and docs/*.md runs, as written, and must
succeed. The rules (docs/ci.md, "The docs test"):

- Each page runs in one fresh folder of its own, its blocks in order, so a block may use only what an earlier block
  of the same page made (``llamabench examples`` writes the user's files the pages name; ``runs/``, ``reports/``).
  The folder starts with nothing but ``.venv``, a link to the environment the tests run in (the one ``install.sh``
  made), whose ``bin`` is first on ``PATH``, as after ``source .venv/bin/activate``.
- Two substitutions, and no others: a ``bash install.sh`` line is not run (``.venv`` is that install); and where a
  command evaluates the embedded SmolLM2 (``llamabench run`` without ``--model`` or with a ``.gguf``,
  ``evaluate_checkpoint(None, ...)``), its ``--limit N`` or ``limit=N`` becomes 1: the quick start's 4 tasks x 5
  documents take minutes on a loaded 2-core machine. Commands over the examples' tiny checkpoints keep their limits.
- No network (``HF_HUB_OFFLINE=1``), no data folder (``LLAMABENCH_DATA`` unset), one request and model cache for
  the whole session (``LLAMABENCH_CACHE``), so the embedded GGUF is dequantised once.
- A block whose first line is ``# not run by the tests: <reason>`` is skipped; the reason may not be empty.
- What a page says a command prints (a verdict, an exit status, a figure) is in ``PRINTED``: the page must still
  say it, and the block's output must hold it.
"""

from __future__ import annotations

import os
import re
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


# A command that evaluates the embedded SmolLM2: `llamabench run` with no --model or a .gguf, evaluate_checkpoint(None.
_EMBEDDED = re.compile(r"llamabench run\b(?!.*--model(?![ =]\S*\.gguf\b))|evaluate_checkpoint\(None\b", re.DOTALL)
_LIMIT = re.compile(r"(--limit[ =]|\blimit=)\d+")


def substituted(block: Block, as_written: bool = False) -> str:
    """The block as the test runs it: the stated substitutions, nothing else (``as_written``: the limits kept, to
    measure the times the pages quote)."""
    code = re.sub(r"^\s*bash install\.sh\b.*$", ": install.sh already ran", block.code, flags=re.MULTILINE)
    if as_written:
        return code
    commands = re.split(r"(?<!\\)\n", code)  # a command continued with a backslash is one
    return "\n".join(_LIMIT.sub(r"\g<1>1", command) if _EMBEDDED.search(command) else command for command in commands)


@dataclass(frozen=True)
class Printed:
    """A page says that the block holding ``command`` prints each of ``texts``."""

    page: str
    command: str
    texts: tuple[str, ...]


PRINTED = [
    Printed("README.md", "llamabench watch out/", ("REGRESSION at step 300", "exit 1")),
    Printed("training.md", "llamabench watch out/", ("REGRESSION at step 300", "exit 1")),
    Printed(
        "contamination.md",
        "llamabench contamination --corpus books",
        (
            "text:notes.txt L=20: 2 documents; clean 1, not_clean 1, not_dirty 1, dirty 1; undetectable 0; "
            "longest span 31",
            "corpus: 2 file(s), 212 tokens",
        ),
    ),
]


def sandbox(tmp_path: Path, cache: Path) -> tuple[Path, dict]:
    """A fresh folder holding only the ``.venv`` link, and the environment the blocks run in."""
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


@pytest.fixture(scope="session")
def docs_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs_cache")


def run_block(block: Block, folder: Path, env: dict) -> str:
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
    return done.stdout + done.stderr


def test_every_page_has_been_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "tasks.md", "metrics.md", "ci.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_skipped_blocks_say_why(page):
    for block in code_blocks(page):
        assert block.skip_reason != "", f"{block.where()}: '{SKIP}' needs a reason after the colon"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_block_runs_as_written(page, docs_cache, tmp_path):
    runnable = [block for block in code_blocks(page) if block.skip_reason is None]
    if not runnable:
        pytest.skip(f"{page.name} has no block to run")
    folder, env = sandbox(tmp_path, docs_cache)
    claims = [claim for claim in PRINTED if claim.page == page.name]
    for block in runnable:
        output = run_block(block, folder, env)
        for claim in [claim for claim in claims if claim.command in block.code]:
            for text in claim.texts:
                assert text in output, (
                    f"{block.where()} does not print {text!r}, which the page says:\n{output[-3000:]}"
                )
            claims.remove(claim)
    assert not claims, f"{page.name}: no block runs {claims[0].command!r}, whose output the test checks"


def test_the_pages_still_say_what_the_test_checks():
    for claim in PRINTED:
        page = next(page for page in PAGES if page.name == claim.page)
        for text in claim.texts:
            assert text in page.read_text(), f"{claim.page} no longer says {text!r}; update PRINTED"


def test_the_substitutions_are_the_stated_ones():
    block = Block(ROOT / "README.md", 1, "bash", "bash install.sh vllm\nllamabench run --limit 200 --tasks qa\n")
    assert substituted(block) == ": install.sh already ran\nllamabench run --limit 1 --tasks qa\n"
    gguf = "llamabench run --model x.gguf --tasks qa \\\n    --limit=5\nllamabench run --model my-model --limit 5\n"
    assert substituted(Block(ROOT / "README.md", 1, "bash", gguf)) == gguf.replace("--limit=5", "--limit=1")
    python = "f(limit=50)\nevaluate_checkpoint(None, ['qa'], limit=2)\nevaluate_checkpoint('m', ['qa'], limit=2)\n"
    assert substituted(Block(ROOT / "README.md", 1, "python", python)) == python.replace("limit=2)\ne", "limit=1)\ne")


def test_the_names_the_pages_import_exist():
    """Every ``llamabench.NAME`` and ``from llamabench import NAME`` of a Python block, run or not, is there."""
    import llamabench

    for page in PAGES:
        for block in code_blocks(page):
            if block.language != "python":
                continue
            names = re.findall(r"\bllamabench\.(\w+)\b(?!\.)", block.code)
            for imported in re.findall(r"^from llamabench import (.+)$", block.code, flags=re.MULTILINE):
                names += [name.strip() for name in imported.split(",")]
            for name in names:
                assert hasattr(llamabench, name), f"{block.where()}: llamabench has no {name}"


def test_the_readme_stays_readable_top_to_bottom():
    """At most 250 lines, and it links every page of docs/ (a page nobody can find from it would rot unseen)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
