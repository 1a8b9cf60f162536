"""What a user installs and what a packager downloads: version, typing marker, license, sdist."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

import genagent_thespian as g
from genagent_thespian.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_distributions_version() -> None:
    assert g.__version__ == metadata.version("genagent-thespian")


def test_genagent_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"genagent {g.__version__}"


def test_the_package_is_marked_typed_and_licensed() -> None:
    assert (Path(g.__file__).parent / "py.typed").is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def _tracked(*folders: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", *folders], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {name for name in listed if not name.endswith(".gitignore")}


def test_the_sdist_holds_the_code_tests_with_their_data_and_docs(sdist_names: set[str]) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    expected = _tracked("genagent_thespian", "backends", "patterns", "tests", "docs")
    assert expected - sdist_names == set()
    assert {"LICENSE", "README.md", "CHANGELOG.md", "genagent_thespian/py.typed"} <= sdist_names
    assert any(name.startswith("tests/data/captures/") for name in sdist_names)


def test_the_sdist_holds_no_stray_files(sdist_names: set[str]) -> None:
    stray = [
        name
        for name in sdist_names
        if name.endswith((".whl", ".pyc", ".tmp")) or "__pycache__" in name or name.startswith(".")
    ]
    assert stray == []


def test_genagent_node_is_installed_and_creates_the_node_secret(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "genagent-node"
    assert command.exists(), "the genagent-node entry point is not installed"
    secret = tmp_path / "conf" / "node.secret"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENAGENT_SECRET")}
    done = subprocess.run(
        [str(command), "--init-secret", "--secret-file", str(secret)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(secret)
    assert secret.stat().st_mode & 0o777 == 0o600
    first = secret.read_bytes()
    subprocess.run(
        [str(command), "--init-secret", "--secret-file", str(secret)], check=True, env=env
    )
    assert secret.read_bytes() == first, "an existing secret is kept"
