"""A real PostgreSQL server for the tests: a throw-away cluster in a temp dir.

Debian's ``postgresql`` package (``.ci/run`` installs it) puts ``initdb`` and ``pg_ctl``
under ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, so as root
the cluster belongs to ``nobody`` and its commands run through ``runuser``. The server
listens on 127.0.0.1 at a free port with password authentication for one role, and each
test gets a database of its own (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genagent_thespian._api.system import free_port

#: The role the tests connect as; its password is made per server.
ROLE = "genagent"


def find_binaries() -> Path | None:
    """The newest installed PostgreSQL ``bin`` folder with initdb and pg_ctl, or ``None``."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{folder}/initdb", os.X_OK) and os.access(f"{folder}/pg_ctl", os.X_OK):
            return Path(folder)
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            return None
    return Path(shutil.which("initdb") or "").parent


class PostgresServer:
    """One running cluster; :meth:`stop` ends it and removes its files."""

    def __init__(self, binaries: Path, *, listen: str = "127.0.0.1") -> None:
        self.binaries = binaries
        self.listen = listen
        self.folder = Path(tempfile.mkdtemp(prefix="genagent-pg-"))
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self._as_root = os.geteuid() == 0
        try:
            self._start()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _start(self) -> None:
        data = self.folder / "data"
        password_file = self.folder / "password"
        password_file.write_text(self.password)
        if self._as_root:
            shutil.chown(self.folder, "nobody")
            shutil.chown(password_file, "nobody")
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            ROLE,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
        )
        password_file.unlink()
        if self.listen != "127.0.0.1":  # clients in other network namespaces
            with open(data / "pg_hba.conf", "a", encoding="ascii") as hba:
                hba.write(f"host all {ROLE} {self.listen}/24 scram-sha-256\n")
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-o",
            f"-c listen_addresses={self.listen} -p {self.port} -k {self.folder} -c fsync=off",
            "start",
        )

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.binaries / program), *args]
        if self._as_root:
            command = ["runuser", "-u", "nobody", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=self.folder
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database``, password included."""
        return f"postgresql://{ROLE}:{self.password}@{self.listen}:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; skipped with the reason when it cannot run."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]' installs it)")
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
            "postgresql package (.ci/run does)"
        )
    server = PostgresServer(binaries)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres_server.new_database()
