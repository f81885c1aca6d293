"""A real PostgreSQL server for tests and bench scripts: Debian's postgresql (15 in the machine
image; CI installs it where missing), started as the postgres user in a folder of its own, on a
free port, for the life of the process that started it (each pytest-xdist worker has one).

Host connections need a password (scram-sha-256), as a real server would: each database URL
names it as `${SNAKETUNE_TEST_DB_PASSWORD}`, which this process's environment holds and the
Snakemake runs it starts inherit. `new_database()` gives each test a database of its own.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD_ENV = "SNAKETUNE_TEST_DB_PASSWORD"
ROLE = "snaketune"


def bin_dir() -> Path | None:
    """Where Debian's PostgreSQL server programs are (the newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def missing_reason() -> str | None:
    """Why no server can be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL's server is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One running server; `stop()` (also at exit) stops it and removes its folder."""

    def __init__(self, max_connections: int = 300, host: str = "127.0.0.1", networks: tuple[str, ...] = ()):
        """`host`: the address it listens on besides 127.0.0.1, and that its URLs name (a SLURM
        node in a network namespace reaches this machine at its veth address: tests/slurm/);
        `networks`: the client networks allowed besides this machine (CIDR), by password."""
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="snaketune-pg-"))
        self.port = _free_port()
        # one password for every server of this process: the variable the URLs name is one
        self.password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(16)
        os.environ[PASSWORD_ENV] = self.password
        socket_dir = self.root / "socket"
        socket_dir.mkdir()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(socket_dir, "postgres")
        self._as = as_postgres
        password_file = self.root / "pwfile"
        password_file.write_text(self.password + "\n")
        if as_postgres:
            shutil.chown(password_file, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", ROLE, "--pwfile", str(password_file),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
        password_file.unlink()
        self.host = host
        with open(self.root / "data" / "pg_hba.conf", "a") as hba:
            for network in networks:
                hba.write(f"host all all {network} scram-sha-256\n")
        # fsync off: a test server's data need not survive a power cut, and its commits are 10x faster.
        listen = ",".join(dict.fromkeys(["127.0.0.1", host]))
        options = (f"-p {self.port} -k {socket_dir} -c listen_addresses={listen} -c fsync=off "
                   f"-c synchronous_commit=off -c max_connections={max_connections}")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "start")
        atexit.register(self.stop)

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, text=True)

    def url(self, database: str) -> str:
        """The URL of `database` as a tune.yaml writes it: its password as ${SNAKETUNE_TEST_DB_PASSWORD}."""
        return f"postgresql://{ROLE}:${{{PASSWORD_ENV}}}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create database `name` (empty) and return its URL (`url`)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=ROLE, password=self.password,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)

    def new_role(self, name: str, password: str, database: str) -> str:
        """Create login role `name` with `password`, owning `database` (new_database's); returns
        the database's URL as that role, its password named as ${SNAKETUNE_TEST_ROLE_PASSWORD}."""
        import psycopg2
        import psycopg2.sql

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=ROLE, password=self.password,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            role = psycopg2.sql.Identifier(name)
            cursor.execute(psycopg2.sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            cursor.execute(psycopg2.sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(role), (password,))
            cursor.execute(psycopg2.sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                psycopg2.sql.Identifier(database), role))
        connection.close()
        return f"postgresql://{name}:${{SNAKETUNE_TEST_ROLE_PASSWORD}}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        if self.root.exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                            "stop"], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` whose bytes contain `secret`."""
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()
            and needle in path.read_bytes()]


def assert_password_kept(storage: str | None, root: Path, *runs) -> None:
    """With a database `storage` (a test's tuning.storage), the server's password is in no file
    under `root` (the test's folder: the study's files, Snakemake's logs and records) and in no
    console line of `runs` (completed processes). Nothing to check on the journal (None)."""
    if not storage:
        return
    secret = os.environ[PASSWORD_ENV]
    assert files_holding(root, secret) == []
    for run in runs:
        assert secret not in run.stdout + run.stderr


def assert_study_kept_in(storage: str | None, output_dir: Path) -> None:
    """The study of `output_dir` is where `storage` says: its journal file (None), or the database
    (no journal file; storage.json names the URL as written, and the database holds the study)."""
    import optuna

    from snaketune.database import DatabaseStorage

    journal = output_dir / "study.journal"
    if not storage:
        assert journal.exists()
        return
    assert not journal.exists()
    import json

    record = json.loads((output_dir / "storage.json").read_text())
    assert record["storage"] == storage
    assert record["study_name"] in optuna.get_all_study_names(DatabaseStorage(storage).open())


def heartbeat_count(storage: str) -> int:
    """How many trials of the database `storage` have recorded a heartbeat (Optuna's
    trial_heartbeats table: one row per trial, updated at each beat)."""
    import sqlalchemy

    from snaketune.database import expanded_url

    engine = sqlalchemy.create_engine(expanded_url(storage))
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats")).scalar()
    finally:
        engine.dispose()
