"""Every ```python block of the README and the guides in docs/ runs, as a reader would run it.

Each document's blocks run in order, each as its own script (``python file.py``) in one
fresh folder per document, with that folder on ``PYTHONPATH``. A block whose first line is a
comment naming a file (``# coder.py``) is saved under that name, so later blocks import it,
as the reader who saved it would. A runner records every system a block starts, shuts down
any the block left running and checks that no process of it is left.

A block that cannot run here (it needs a logged-in CLI, an API key, several hosts) is marked
on the line just above its fence, with the reason, and is still compiled::

    <!-- not run: needs the claude CLI installed and logged in -->

A guide that builds one session over several blocks (start a system, then use it) marks each
later block as continuing the one above; the chain runs as one script::

    <!-- continues the example above -->

A block written for a logged-in ``claude`` (the reader's setup) runs here against the real
CLI (``.ci/tools``) with its model requests served by :class:`FakeLLMServer`, marked::

    <!-- runs here with the real claude CLI against FakeLLMServer -->

A guide that has no ``# coder.py`` block of its own gets the README's, which its examples
import as the reader who followed the Quick start has it.

Such a block runs as written: only the environment differs (``claude`` on ``PATH``, the fake
server as its API, a throw-away ``HOME``), as a reader's shell would provide the real ones.

The pattern guides (docs/patterns/) have their own runner: tests/patterns/test_pattern_guides.py.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from support_cli import quiet_env, require_cli

from genagent_thespian.testing import FakeLLMServer, Reply, Text

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"(?:^<!-- not run: (?P<reason>.*?) -->\n"
    r"|^(?P<continues><!-- continues the example above -->)\n"
    r"|^(?P<claude><!-- runs here with the real claude CLI against FakeLLMServer -->)\n)?"
    r"^```python\n(?P<code>.*?)^```",
    re.S | re.M,
)
#: What the fake model answers every request of a block run against FakeLLMServer: streamed
#: slowly enough (a few seconds a turn) that a block interrupting a turn it just started
#: finds it running, as with a real model.
FAKE_ANSWER = Reply(blocks=(Text("The project is an example. DONE"),), chunk_delay=0.5)
FILE_NAME = re.compile(r"#\s*([A-Za-z_]\w*\.py)\b")

RUNNER = textwrap.dedent(
    """
    import runpy, sys, traceback
    import genagent_thespian as g
    from genagent_thespian.testing import system_processes, wait_until

    started = []
    original = g.start_system

    def recording_start_system(*args, **kwargs):
        system = original(*args, **kwargs)
        started.append(system)
        return system

    g.start_system = recording_start_system
    status = 0
    try:
        runpy.run_path(sys.argv[1], run_name="__main__")
    except BaseException:
        traceback.print_exc()
        status = 1
    for system in started:
        g.shutdown_system(system)
    for system in started:
        try:
            wait_until(lambda: not system_processes(system), timeout=15)
        except AssertionError:
            print("processes left:", system_processes(system), file=sys.stderr)
            sys.exit(3)
    sys.exit(status)
    """
)


@dataclass(frozen=True)
class Block:
    """One fenced python block of a document."""

    document: Path
    line: int
    code: str
    skip_reason: str | None
    fences: int = 1  # a chain of continued blocks is one Block
    claude: bool = False  # runs with the real claude CLI against FakeLLMServer

    @property
    def file_name(self) -> str | None:
        first = self.code.splitlines()[0] if self.code.strip() else ""
        found = FILE_NAME.match(first)
        return found.group(1) if found else None


def blocks_of(document: Path) -> list[Block]:
    """The ```python blocks of ``document``, with their skip marks.

    A block marked as continuing the one above is joined to it (one script, one block)."""
    text = document.read_text("utf-8")
    blocks: list[Block] = []
    for m in FENCE.finditer(text):
        if m.group("continues") and blocks:
            head = blocks[-1]
            code = f"{head.code}\n\n{m.group('code')}"
            blocks[-1] = Block(
                document, head.line, code, head.skip_reason, head.fences + 1, head.claude
            )
            continue
        line = text.count("\n", 0, m.start("code"))
        claude = m.group("claude") is not None
        blocks.append(Block(document, line, m.group("code"), m.group("reason"), claude=claude))
    return blocks


def _name(document: Path) -> str:
    return str(document.relative_to(ROOT))


def test_every_python_fence_is_found() -> None:
    """A fence the extractor would miss (indented, other spelling) would silently not run."""
    for document in DOCUMENTS:
        text = document.read_text("utf-8")
        fences = len(re.findall(r"^\s*```\s*(?:python|py)\s*$", text, re.M))
        assert fences == sum(b.fences for b in blocks_of(document)), _name(document)


def test_skipped_blocks_say_why_and_still_compile() -> None:
    for document in DOCUMENTS:
        for block in blocks_of(document):
            if block.skip_reason is not None:
                assert len(block.skip_reason.strip()) > 10, f"{_name(document)}:{block.line}"
            ast.parse(block.code, filename=f"{_name(document)}:{block.line}")


def test_the_readme_quick_start_runs_without_a_key() -> None:
    readme = blocks_of(ROOT / "README.md")
    quick_start = [b for b in readme if b.file_name in ("coder.py", "quickstart.py")]
    assert [b.skip_reason for b in quick_start] == [None, None]
    assert 'backend="scripted"' in quick_start[1].code
    assert "quickstart.py" in shown_outputs(ROOT / "README.md")


RUNNABLE = [d for d in DOCUMENTS if any(b.skip_reason is None for b in blocks_of(d))]


@pytest.mark.parametrize("document", RUNNABLE, ids=_name)
def test_document_code_runs(document: Path, tmp_path: Path) -> None:
    (tmp_path / "_run_doc_block.py").write_text(RUNNER, "utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore::ResourceWarning",
        "HOME": str(tmp_path),  # state files and default stores land here, not in ~
    }
    outputs: dict[str, str] = {}
    blocks = blocks_of(document)
    if not any(block.file_name == "coder.py" for block in blocks):
        # The guides build on the README's Quick start class, as their reader has it.
        (tmp_path / "coder.py").write_text(_readme_coder(), "utf-8")
    with contextlib.ExitStack() as stack:
        for index, block in enumerate(blocks):
            file = tmp_path / (block.file_name or f"block_{index}.py")
            file.write_text(block.code, "utf-8")
            if block.skip_reason is not None:
                continue
            block_env = env
            if block.claude:
                block_env = {**env, **_claude_environment(stack, tmp_path)}
            done = subprocess.run(
                [sys.executable, "_run_doc_block.py", file.name],
                cwd=tmp_path,
                env=block_env,
                capture_output=True,
                text=True,
                timeout=100,
                check=False,
            )
            assert done.returncode == 0, (
                f"{_name(document)}:{block.line} failed:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
            )
            outputs[file.name] = done.stdout
    for script, shown in shown_outputs(document).items():
        assert outputs[script] == shown, f"{_name(document)}: {script} prints other lines"


def _readme_coder() -> str:
    """The README's ``# coder.py`` block, which the guides' examples import."""
    [coder] = [b for b in blocks_of(ROOT / "README.md") if b.file_name == "coder.py"]
    return coder.code


def _claude_environment(stack: contextlib.ExitStack, home: Path) -> dict[str, str]:
    """What a reader's shell gives a block written for a logged-in ``claude``: the real CLI
    on ``PATH``, and (here) a :class:`FakeLLMServer` as its API, in a throw-away ``HOME``."""
    binary = Path(require_cli("claude"))
    server = stack.enter_context(FakeLLMServer(default=FAKE_ANSWER))
    return {
        **quiet_env(home),
        "PATH": os.pathsep.join([str(binary.parent), os.environ.get("PATH", "")]),
        "GENAGENT_CLAUDE_BIN": str(binary),
        "ANTHROPIC_API_KEY": "sk-ant-docs-test",
        "ANTHROPIC_BASE_URL": server.url,
    }


def test_blocks_for_claude_run_here_against_the_fake_server() -> None:
    """The guides' claude examples run (they are not compile-only), as written."""
    marked = [b for d in DOCUMENTS for b in blocks_of(d) if b.claude]
    assert len(marked) >= 3
    assert all(b.skip_reason is None and "claude" in b.code.lower() for b in marked)


def shown_outputs(document: Path) -> dict[str, str]:
    """What a document says a script prints: ```text blocks starting ``$ python NAME.py``."""
    shown = re.findall(
        r"^```text\n\$ python (\w+\.py)\n(.*?)^```", document.read_text("utf-8"), re.S | re.M
    )
    return dict(shown)


def test_no_doc_sends_a_reader_to_a_private_module() -> None:
    """Docs name public entry points only (architecture.md describes the private tree)."""
    readable = [d for d in DOCUMENTS if d.name != "architecture.md"]
    readable += sorted((ROOT / "docs" / "patterns").glob("*.md"))
    private = re.compile(r"genagent_thespian\._\w+|python -m genagent_thespian\._")
    offenders = [
        f"{_name(d)}:{n}"
        for d in readable
        for n, line in enumerate(d.read_text("utf-8").splitlines(), start=1)
        if private.search(line)
    ]
    assert offenders == []


def test_the_site_lists_every_guide() -> None:
    nav = (ROOT / "mkdocs.yml").read_text("utf-8")
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert [page for page in pages if page not in nav] == []


#: Public modules documented elsewhere than the API reference, and where.
_REFERENCED_ELSEWHERE = {
    "genagent_thespian.cli": "a command: docs/operations.md is its reference",
}


def _public_modules() -> list[str]:
    """Every public module a user imports: the package's own, each pattern and backend."""
    found = ["genagent_thespian"]
    for package, folder in (
        ("genagent_thespian", ROOT / "genagent_thespian"),
        ("genagent_thespian.patterns", ROOT / "patterns"),
        ("genagent_thespian.backends", ROOT / "backends"),
    ):
        for child in sorted(folder.iterdir()):
            name = child.stem if child.suffix == ".py" else child.name
            is_module = child.suffix == ".py" or (child / "__init__.py").exists()
            if is_module and not name.startswith("_"):
                found.append(f"{package}.{name}")
    return [module for module in found if module not in _REFERENCED_ELSEWHERE]


def test_the_api_reference_covers_every_public_module() -> None:
    """A public module added without a reference page would be missing from the site."""
    directives = "\n".join(
        page.read_text("utf-8") for page in sorted((ROOT / "docs" / "reference").glob("*.md"))
    )
    documented = set(re.findall(r"^::: (\S+)", directives, re.M))
    # backends/ and patterns/ are read from their folders (mkdocstrings' path is the root).
    installed = {re.sub(r"^(patterns|backends)\.", r"genagent_thespian.\1.", d) for d in documented}
    assert [module for module in _public_modules() if module not in installed] == []
