"""A throwaway PostgreSQL cluster for the tests and benches of the PostgreSQL store (issue 16).

``Cluster.create()`` runs ``initdb`` in a fresh temporary folder (superuser ``inboxd``,
scram-sha-256 password authentication, no trust even on loopback) and ``start()`` runs the
server with ``pg_ctl`` on a free loopback port, its unix socket inside that folder. PostgreSQL
refuses to run as root, so as root every server command runs as ``nobody`` (``runuser``) and
the folder is handed to it. fsync stays on: inboxd is a durability product, and the
restart tests must see what a real server keeps.

Not a test module: ``tests/conftest.py`` wraps it in the ``pg_cluster`` / ``pg_url`` fixtures,
and ``bench/pg_driver.py`` uses it directly.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests._tools import free_port

__all__ = ["Cluster", "find_bindir", "reachable_or"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
UNPRIVILEGED = "nobody"


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,); a folder whose name is not a version -> ()."""
    name = path.parent.name
    return (
        tuple(int(part) for part in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()
    )


def _has_server(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def find_bindir(pg_config: str | None = None, debian_root: Path = DEBIAN_ROOT) -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir`` when it has them
    (libpq-dev's pg_config may name a version whose server is not installed), else the newest
    ``<debian_root>/<version>/bin`` that has them, else the folder of an ``initdb`` on PATH."""
    pg_config = pg_config if pg_config is not None else shutil.which("pg_config")
    if pg_config is not None:
        answer = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if answer.returncode == 0 and _has_server(Path(answer.stdout.strip())):
            return Path(answer.stdout.strip())
    found = sorted(
        (path for path in debian_root.glob("*/bin") if _version_key(path) and _has_server(path)),
        key=_version_key,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


@dataclass
class Cluster:
    """One PostgreSQL cluster in ``base`` (data in ``base/data``, log in ``base/server.log``),
    listening on 127.0.0.1:``port`` once started."""

    bindir: Path
    base: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = "inboxd"
    dbname: str = "inboxd"
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls, bindir: Path, *, parent: Path | None = None, settings: dict[str, str] | None = None
    ) -> Cluster:
        """A new cluster (``initdb`` done, not started) in a fresh folder under ``parent``
        (default: the system's temporary folder, or /tmp when ``nobody`` cannot reach that)."""
        if parent is None:
            temp = Path(tempfile.gettempdir())
            parent = temp if os.geteuid() != 0 else reachable_or(temp, Path("/tmp"))
        base = Path(tempfile.mkdtemp(prefix="inboxd-pg-", dir=parent))
        cluster = cls(
            bindir=bindir,
            base=base,
            port=free_port(),
            password=secrets.token_hex(16),
            settings=dict(settings or {}),
        )
        cluster._initdb()
        return cluster

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file (its tail explains a failed test)."""
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """``postgresql://inboxd@127.0.0.1:PORT/inboxd``: no password (a state_url has none)."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def env(self) -> dict[str, str]:
        """``os.environ`` plus PGPASSWORD: the environment of a subprocess that connects."""
        return {**os.environ, "PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        """Create the empty database ``name`` (as the superuser); its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            self.url_for("postgres"), password=self.password, autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def start(self) -> None:
        """Start the server on ``port`` and wait until it accepts connections."""
        options = [
            f"-p {self.port}",
            f"-c listen_addresses={self.host}",
            f"-c unix_socket_directories={self.base}",
            *(f"-c {key}={value}" for key, value in self.settings.items()),
        ]
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
            "-l", str(self.log_path), "-o", " ".join(options),
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (``-m fast``: sessions are cut, a clean shutdown checkpoint)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.datadir))

    def restart(self) -> None:
        """Stop and start again on the same port (a database restart under a running daemon)."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process (a crashed database host); the next
        ``start()`` runs crash recovery. Returns once they are all gone."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # no new backend forks while we collect them
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {victims} survived SIGKILL for 30 s")
            time.sleep(0.02)  # the kernel reaps them; nothing to wait on but their /proc entry
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)

    def remove(self) -> None:
        """Stop the server if it runs and delete the whole folder."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.datadir))
        shutil.rmtree(self.base, ignore_errors=True)

    def _initdb(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(UNPRIVILEGED)
            for path in (self.base, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", self.user, "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "--no-locale", "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        self.start()
        try:
            self.create_database(self.dbname)
        finally:
            self.stop()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", UNPRIVILEGED, "--", *argv]
        done = subprocess.run(
            argv, cwd=self.base, capture_output=True, text=True, check=False,
            env={**os.environ, "LC_ALL": "C"},
        )  # fmt: skip
        if done.returncode != 0:
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(
                f"{tool} {' '.join(args[:2])} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\nserver log {self.log_path}:\n{log}"
            )


def reachable_or(folder: Path, fallback: Path) -> Path:
    """``folder`` when every folder on its path lets others through (o+x: ``nobody`` can reach
    a cluster made inside it), else ``fallback`` (a root's TMPDIR, pytest's tmp_path are 0700)."""
    resolved = folder.resolve()
    for step in (resolved, *resolved.parents):
        if not step.stat().st_mode & stat.S_IXOTH:
            return fallback
    return folder


def _children(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (from /proc)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            pids.append(int(entry.parent.name))
    return pids
