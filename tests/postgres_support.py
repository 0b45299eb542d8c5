"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl on a free port, trust auth, no fsync.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user (Debian's
package creates it) and its commands run through `runuser`. Needs the server binaries
(`apt-get install -y postgresql`) and the asyncpg driver."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis_support import free_port

DB_USER = "tkr"


class PostgresUnavailable(RuntimeError):
    """The binaries (or the postgres user, as root) are missing."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise PostgresUnavailable(f"{name} not found (apt-get install -y postgresql)")
    return found


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root needs runuser to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class PostgresCluster:
    folder: Path
    port: int
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            _as_owner([self.pg_ctl, "-D", str(self.folder / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="tkr-pg-"))
    if os.geteuid() == 0:
        try:
            shutil.chown(folder, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable("no postgres user to own the cluster") from None
    data, log_path = folder / "data", folder / "log"
    try:
        subprocess.run(
            _as_owner([initdb, "-D", str(data), "-A", "trust", "-U", DB_USER, "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        # A port free when chosen may be taken before the server binds it: then try another.
        for attempt in range(3):
            port = free_port()
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
            try:
                subprocess.run(
                    _as_owner([pg_ctl, "-D", str(data), "-o", options, "-l", str(log_path), "-w", "-t", "60", "start"]),
                    check=True,
                    capture_output=True,
                    timeout=90,
                )
                break
            except subprocess.CalledProcessError:
                log = log_path.read_text() if log_path.exists() else ""
                if attempt == 2 or "address already in use" not in log.lower():
                    raise
    except subprocess.CalledProcessError as error:
        log = log_path.read_text() if log_path.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {error.stderr.decode(errors='replace')}\n{log}") from error
    return PostgresCluster(folder, port, pg_ctl)


def postgres_cluster_url() -> Iterator[str]:
    """The body of a module's `postgres_url` fixture: a cluster's URL for the module, stopped after. Without the
    binaries or asyncpg the tests skip, except under `make test` (TKR_TEST_SERVICES_REQUIRED), which installs
    PostgreSQL: there they fail."""
    try:
        import asyncpg  # noqa: F401

        cluster = start_postgres()
    except (ImportError, PostgresUnavailable) as missing:
        if os.environ.get("TKR_TEST_SERVICES_REQUIRED") == "1":
            pytest.fail(f"PostgreSQL tests cannot run: {missing}")
        pytest.skip(str(missing))
    yield cluster.url
    cluster.stop()
