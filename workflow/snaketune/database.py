"""A study kept in a database server (`tuning.storage: postgresql://...`), through Optuna's RDBStorage.

Optuna's docs advise a database beyond one machine: its file journal's locks "may not work
correctly" across machines on NFS (tutorial 004_distributed, FAQ), and only RDBStorage has
heartbeats, so a trial whose process stopped beating is failed (`fail_stale_trials`) and its slot
re-run with its parameters. Which URLs are taken, and why the others are refused, is `SCHEMES` and
`REFUSED`; docs/scale-out.md says the same to users.

Credentials come from the environment only: `${VAR}` in the URL, expanded in the process that
connects (`connect_url`), or libpq's own `PGPASSWORD`/`PGPASSFILE`/`~/.pgpass`. A password written
into tune.yaml is refused (`storage_problems`): the config is copied into tune.merged.yaml, the
SLURM job scripts and the trials' launch files. So the URL as written (`StudyStorage.where`) holds
no secret and is what every message, file and log shows; the expanded one never leaves `open`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading

import optuna
from optuna.storages import BaseStorage, RDBStorage

from snaketune.errors import SnaketuneError

# The URL schemes taken (SQLAlchemy's names; the driver each needs, and the extra that installs it).
SCHEMES = {"postgresql": "psycopg2", "postgresql+psycopg2": "psycopg2"}
DRIVER_EXTRA = "snaketune[postgres]"

# The schemes Optuna would take that a study here refuses, and why (docs/scale-out.md).
REFUSED = {
    "sqlite": ("Optuna's FAQ advises against SQLite for trials that run at once (its one file lock "
               "serialises writers and times out), and on one machine the file journal is the better "
               "store: leave tuning.storage out"),
    "mysql": ("MySQL is not tested with snaketune (its tests run PostgreSQL servers); use a "
              "postgresql:// URL"),
    "redis": ("Optuna's journal on Redis keeps the study in a server whose default is memory only "
              "(no AOF), so a restart loses every trial; use a postgresql:// URL, or leave "
              "tuning.storage out for the file journal"),
}

# `${NAME}` in the URL: an environment variable, expanded where the study is opened.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Optuna's heartbeat: a running trial records one every HEARTBEAT_SECONDS (`beating`); one silent
# for GRACE_SECONDS is failed by the next `fail_stale_trials` (a slot that starts, or aggregate).
# A trial's training steps hold the GIL for seconds at a time, so the grace is generous.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 180


class StorageUnreachable(SnaketuneError, ConnectionError):
    """The database of tuning.storage refused the connection (down, wrong host, credentials)."""


def scheme(url: str) -> str:
    """The URL's scheme, lower case (`postgresql`, `postgresql+psycopg2`, `sqlite`, ...)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def variables(url: str) -> list[str]:
    """The environment variables `url` names as `${NAME}`, in order."""
    return VARIABLE.findall(url)


def storage_problems(url: str, path: str = "tuning.storage") -> list[str]:
    """What is wrong with `url` as a study's storage ('yaml.path: ...' lines; the URL shown is the
    one written, which holds no secret once this passes). Reads the environment, connects nowhere."""
    kind = scheme(url)
    family = kind.split("+", 1)[0]
    if not kind:
        return [f"{path}: {url!r} is not a storage URL: write postgresql://user@host:5432/dbname "
                "(a password as ${VAR}, or from PGPASSWORD or ~/.pgpass), or leave storage out for the "
                "file journal in tuning.output_dir"]
    if family in REFUSED:
        return [f"{path}: {family}:// is not taken: {REFUSED[family]}"]
    if kind not in SCHEMES:
        return [f"{path}: {kind}:// is not a storage snaketune runs a study on: write postgresql://... "
                "(Optuna's RDBStorage), or leave storage out for the file journal"]
    problems = []
    try:
        parsed = _parse(url)
    except Exception as error:  # noqa: BLE001 (SQLAlchemy's ArgumentError, or a bad port: ValueError)
        return [f"{path}: {_shown(url)} is not a URL SQLAlchemy reads ({type(error).__name__}); write "
                "postgresql://user@host:5432/dbname"]
    if parsed.password is not None and not VARIABLE.fullmatch(parsed.password):
        # Said without the URL: it holds the password.
        problems.append(f"{path}: the URL holds a password as plain text; write it as ${{VAR}} (e.g. "
                        "postgresql://user:${SNAKETUNE_DB_PASSWORD}@host/db) and export that variable, or "
                        "leave it out and set PGPASSWORD or ~/.pgpass: tune.yaml is copied into the study's "
                        "files, job scripts and logs, an environment variable is not")
    missing = [name for name in variables(url) if name not in os.environ]
    if missing:
        problems.append(f"{path}: {', '.join('${' + n + '}' for n in missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set in this environment; export "
                        f"{'it' if len(missing) == 1 else 'them'} before running (trial jobs take it from "
                        "the environment they start in)")
    driver = SCHEMES[kind]
    if importlib.util.find_spec(driver) is None:
        problems.append(f"{path}: {kind}:// needs the {driver} driver, which is not installed: "
                        f"pip install '{DRIVER_EXTRA}'")
    return problems


def same_database(a: str | None, b: str | None) -> bool:
    """Whether two URLs as written name the same database (their passwords aside)."""
    if not a or not b:
        return a == b
    try:
        first, second = _parse(a), _parse(b)
    except Exception:  # noqa: BLE001
        return a == b

    def where(url):
        return url.get_backend_name(), url.username, url.host, url.port, url.database, dict(url.query)

    return where(first) == where(second)


def _shown(url: str) -> str:
    """`url` for a message: a password that is not a ${VAR} is never shown."""
    try:
        parsed = _parse(url)
    except Exception:  # noqa: BLE001
        return f"{scheme(url)}://..."
    if parsed.password is not None and not VARIABLE.fullmatch(parsed.password):
        return parsed.render_as_string(hide_password=True)
    return url


def _parse(url: str):
    import sqlalchemy.engine

    return sqlalchemy.engine.make_url(url)


def connect_url(url: str) -> str:
    """`expanded_url(url)` as Optuna's RDBStorage takes it: it `format`s the URL
    ({SCHEMA_VERSION}), so a brace must reach it doubled (SQLAlchemy quotes one in a password, but
    not in a database name). Never shown."""
    return expanded_url(url).replace("{", "{{").replace("}", "}}")


def expanded_url(url: str) -> str:
    """`url` with each `${VAR}` replaced by its value from the environment (quoted where the URL
    needs it), as SQLAlchemy connects with it. Never shown: it may hold a password."""
    parsed = _parse(url)

    def expand(text):
        return None if text is None else VARIABLE.sub(lambda m: os.environ[m.group(1)], text)

    parsed = parsed.set(username=expand(parsed.username), password=expand(parsed.password),
                        host=expand(parsed.host), database=expand(parsed.database),
                        query={k: expand(v) if isinstance(v, str) else v for k, v in parsed.query.items()})
    return parsed.render_as_string(hide_password=False)


class DatabaseStorage:
    """The study's storage in the database at `url` (the URL as written: it names the server and
    holds `${VAR}`s, never a password). A database holds many studies, one per output_dir, each by
    its study name (`study_name`, as recorded beside the study: storage.record_storage)."""

    shared = True  # other studies than this output_dir's may live there

    def __init__(self, url: str, study_name: str | None = None, check_schema: bool = True):
        self.url = url
        self.where = _shown(url)
        self.study_name = study_name
        # Optuna's check that its tables' schema is this version's (~50 ms: alembic reads its
        # migration scripts); a trial job skips it, the run's config check having asked it.
        self.check_schema = check_schema
        self._opened: RDBStorage | None = None  # one engine per DatabaseStorage: exists() then open() share it

    def exists(self) -> bool:
        """Whether the database holds Optuna's tables with a study in them (nothing is created)."""
        try:
            return bool(optuna.get_all_study_names(self._rdb(create_tables=False)))
        except _NoTables:
            return False

    def open(self) -> BaseStorage:
        return self._rdb(create_tables=True)

    def _rdb(self, create_tables: bool) -> RDBStorage:
        """Optuna's RDBStorage on the database; its tables are created first where missing (one
        process at a time: `SCHEMA_LOCK`), or _NoTables is raised (`create_tables=False`, readers)."""
        import sqlalchemy
        import sqlalchemy.exc

        if self._opened is not None:
            return self._opened
        problems = storage_problems(self.url)
        if problems:
            raise StorageUnreachable("; ".join(problems))
        url = connect_url(self.url)
        # pool_pre_ping: a connection the server dropped (a restart, an idle timeout on a long
        # trial) is replaced rather than failing the trial's next write.
        arguments = dict(engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
                         grace_period=GRACE_SECONDS)
        probe = sqlalchemy.create_engine(expanded_url(self.url), poolclass=sqlalchemy.pool.NullPool)
        try:
            with probe.connect() as connection, warnings_off():
                if _schema_ready(connection):
                    self._opened = RDBStorage(url, skip_table_creation=True,
                                              skip_compatibility_check=not self.check_schema, **arguments)
                    return self._opened
                if not create_tables:
                    raise _NoTables
                # Two processes creating Optuna's tables at once collide in PostgreSQL's catalog
                # (jobs starting side by side on a new database; a reader's RDBStorage also stamps
                # alembic's table): one at a time, under a session advisory lock.
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
                try:
                    self._opened = RDBStorage(url, **arguments)
                    return self._opened
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
        except RuntimeError as error:  # Optuna's: the tables are another Optuna version's (its words say what to run)
            raise StorageUnreachable(f"tuning.storage: {self.where}: {error}") from None
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise StorageUnreachable(
                f"tuning.storage: cannot open the study's database {self.where}: {_first_line(error, self.url)}; "
                "is the server running and reachable from this machine, and are the credentials set "
                "(the URL's ${VAR}s, PGPASSWORD or ~/.pgpass)?") from None
        finally:
            probe.dispose()


# The key of the PostgreSQL advisory lock under which Optuna's tables are created ("snaketune" hashed
# to 63 bits: any other user of advisory locks on the database picks other keys).
SCHEMA_LOCK = 0x736E616B6574756E & (2**63 - 1)
# What a database whose every Optuna table is there has (alembic's last: RDBStorage stamps it last).
_TABLES = ("studies", "trials", "version_info", "alembic_version")


class _NoTables(Exception):
    """The database has no (or not all of) Optuna's tables yet."""


def _schema_ready(connection) -> bool:
    import sqlalchemy

    inspector = sqlalchemy.inspect(connection)
    return all(inspector.has_table(name) for name in _TABLES)


def _first_line(error: Exception, url: str) -> str:
    """The driver's own words for `error`, with any value of the URL's variables blanked out
    (libpq does not echo a password, but a host or database name may come from one too)."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for name in variables(url):
        value = os.environ.get(name)
        if value:
            text = text.replace(value, "${" + name + "}")
    return text


# A study's locks in its database (snaketune.locks takes them there for a database study): the
# jobs of such a study may share no file system, or one whose locks cannot be trusted across
# machines (NFS, Lustre without flock), but they all reach the database. PostgreSQL's session-level
# advisory locks are dropped with their session, as a kernel drops an flock with its process, so a
# killed holder never blocks the next run. Keys are PostgreSQL's two-int4 form: the study name
# hashed to 31 bits, and the lock's kind in a range of snaketune's own ("SNT" and the kind).
LOCK_KINDS = {"run": 1, "trials": 2, "claim": 3}
_LOCK_SPACE = 0x534E5400
# What the server is told on a lock's session (user settings, added to the URL's own `options`):
# TCP keepalives, so that a holder whose machine was lost (no FIN ever reaches the server) is
# dropped, and its locks with it, within about 2 minutes rather than the operating system's default
# 2 hours (ignored on a Unix socket); and no lock or statement timeout a role or database may set
# (managed servers do), which would cancel a wait for the claim lock.
_LOCK_SESSION_OPTIONS = ("-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=6 "
                         "-c lock_timeout=0 -c statement_timeout=0")
# How often a held lock's session is checked (`AdvisoryLock.keep`): a session the server ended (a
# restart, pg_terminate_backend, a network break) has taken its locks with it.
LOCK_CHECK_SECONDS = 30
# pg_locks' row (as `l`) of a granted advisory lock of this database whose two-int4 key is :a, :b.
_THIS_LOCK = ("l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
              "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
              "AND l.classid = CAST(:a AS oid) AND l.objid = CAST(:b AS oid)")


def advisory_key(study_name: str, kind: str) -> tuple[int, int]:
    """The two-int4 key of study `study_name`'s lock `kind` (a LOCK_KINDS name), both in
    0..2**31-1 (as pg_locks shows them: oids are unsigned)."""
    import hashlib

    digest = hashlib.blake2b(study_name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF, _LOCK_SPACE + LOCK_KINDS[kind]


class AdvisoryLock:
    """Lock `kind` of study `study_name`, as a PostgreSQL advisory lock on the database of `url`
    (tuning.storage as written), held by a session of its own from `try_hold`/`hold` to `release`
    (or this process's end). `holders` reads who holds it, taking nothing.

    Raises StorageUnreachable (with the URL as written) where the database cannot be reached."""

    def __init__(self, url: str, study_name: str, kind: str, purpose: str = "snaketune"):
        self.url, self.kind, self.purpose = url, kind, purpose
        self.key = advisory_key(study_name, kind)
        self._connection = None
        self._shared = False
        self._keeper: threading.Event | None = None

    def _connect(self):
        import sqlalchemy
        import sqlalchemy.exc

        url = _parse(expanded_url(self.url))
        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool,
            # application_name: pg_stat_activity (and `holders`) names who holds a lock; 63 bytes at most.
            connect_args={"application_name": self.purpose.encode()[:63].decode(errors="ignore"),
                          "options": " ".join(filter(None, [url.query.get("options"), _LOCK_SESSION_OPTIONS]))})
        try:
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise StorageUnreachable(
                f"tuning.storage: cannot reach the study's database {_shown(self.url)} for its {self.kind} lock: "
                f"{_first_line(error, self.url)}") from None
        try:  # PostgreSQL 14 and later end an idle session after idle_session_timeout, if a role sets one
            connection.execute(sqlalchemy.text("SET idle_session_timeout = 0"))
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # an older server: it has no such timeout
        return connection

    def _query(self, connection, sql: str):
        """`sql` on `connection`, its :a and :b the lock's key."""
        import sqlalchemy

        return connection.execute(sqlalchemy.text(sql), {"a": self.key[0], "b": self.key[1]})

    def _take(self, wait: bool, shared: bool) -> bool:
        """pg_[try_]advisory_lock[_shared] on a new session, kept while the lock is held."""
        function = "pg_" + ("" if wait else "try_") + "advisory_lock" + ("_shared" if shared else "")
        connection = self._connect()
        try:
            # pg_advisory_lock returns once it holds the lock; pg_try_advisory_lock, whether it does
            taken = self._query(connection, f"SELECT {function}(:a, :b)").scalar() or wait
        except Exception:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection, self._shared = connection, shared
        return True

    def try_hold(self, shared: bool = False) -> bool:
        """Take the lock if it is free now (shared: beside other shared holders); whether taken."""
        return self._take(wait=False, shared=shared)

    def hold(self, shared: bool = False) -> AdvisoryLock:
        """Take the lock, waiting while another session holds it; returns self."""
        self._take(wait=True, shared=shared)
        return self

    def keep(self) -> AdvisoryLock:
        """Check the held lock every LOCK_CHECK_SECONDS until `release`, in a thread: where the
        server ended its session (a restart, pg_terminate_backend, a network break), the lock went
        with it, so it is taken again on a new session, or, if another holder took it meanwhile,
        that is said on stderr (the study is no longer guarded). For the locks held a whole run or
        trial job; a claim is too short to need it. Returns self."""
        stop = self._keeper = threading.Event()

        def check():
            while not stop.wait(LOCK_CHECK_SECONDS):
                connection = self._connection
                if connection is None or self._session_holds(connection):
                    continue
                with contextlib.suppress(Exception):
                    connection.close()
                try:
                    again = self.try_hold(shared=self._shared)
                except StorageUnreachable:
                    again = False
                if not again:
                    self._connection = None
                print(f"snaketune: the database session holding the study's {self.kind} lock was ended by the "
                      "server; " + ("took the lock again" if again else
                                    "it could not be taken again (another holder has it, or the server is "
                                    "unreachable): this run no longer guards the study; stop it and run again"),
                      file=sys.stderr, flush=True)
                if not again:
                    return

        threading.Thread(target=check, name=f"snaketune-{self.kind}-lock", daemon=True).start()
        return self

    def _session_holds(self, connection) -> bool:
        """Whether `connection`'s session is alive and still holds the lock."""
        try:
            return bool(self._query(connection, f"SELECT count(*) FROM pg_locks l WHERE {_THIS_LOCK} "
                                                "AND l.pid = pg_backend_pid()").scalar())
        except Exception:  # noqa: BLE001 (the session is gone: the driver's error says how)
            return False

    def release(self) -> None:
        """Drop the lock (its session ends)."""
        if self._keeper is not None:
            self._keeper.set()
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a session the server ended already
                self._connection.close()
            self._connection = None

    def holders(self, exclusive: bool = False) -> list[str]:
        """The sessions that hold the lock now (exclusive: only those holding it exclusively), each
        as its holder's application_name and when its session began. Takes nothing."""
        mode = "AND l.mode = 'ExclusiveLock'" if exclusive else ""
        connection = self._connect()
        try:
            rows = self._query(connection, "SELECT a.application_name, a.backend_start FROM pg_locks l "
                                           f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_THIS_LOCK} {mode}").all()
        finally:
            connection.close()
        # Another role's session start is hidden without pg_read_all_stats (NULL).
        return [f"{name or 'a session'}" + (f", since {start:%Y-%m-%d %H:%M:%S}" if start else "") for name, start in rows]


@contextlib.contextmanager
def warnings_off():
    """Optuna marks its heartbeats experimental (since 2.9, unchanged): said once in the docs, not per job."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's `fail_stale_trials`: a RUNNING trial whose last heartbeat is older than the grace
    period is failed (its process died: a lost node). A trial that never beat (killed in the
    moment between its claim and its first beat) stays RUNNING until its slot runs again, as on the
    journal. Nothing where the storage keeps no heartbeats."""
    with warnings_off():  # experimental since Optuna 2.9, unchanged since
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def beating(storage: BaseStorage, trial_id: int):
    """Record the trial's heartbeat every interval while the block runs, where the storage keeps
    heartbeats (RDBStorage with heartbeat_interval); else nothing. Written here because Optuna's
    own heartbeat thread is private to `Study.optimize`, which a slot does not use; the beat itself
    is the storage's public `record_heartbeat`."""
    # RDBStorage, or the cache Optuna wraps it in (both have the heartbeat's public methods).
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as error:  # noqa: BLE001 (a dropped connection: the next beat retries)
                print(f"snaketune: could not record trial id {trial_id}'s heartbeat ({type(error).__name__}); "
                      "retrying", flush=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="snaketune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval)
