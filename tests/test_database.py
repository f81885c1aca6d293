"""A study in a database (tuning.storage: postgresql://..., snaketune.database): which URLs are
taken, credentials that never leave the environment, and the same study as on the journal (claims,
heartbeats, conflicts) on a real PostgreSQL server (tests/postgres_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from postgres_server import PASSWORD_ENV
from snaketune import database, scheduler
from snaketune import space as search_space
from snaketune.config import ConfigError
from snaketune.database import DatabaseStorage, StorageUnreachable, beating, connect_url, same_database, storage_problems
from snaketune.errors import SnaketuneError
from snaketune.storage import storage_conflict, study_storage, trial_id_of
from snaketune.study import load_study, open_study
from snaketune.validate import load_tune_config
from workflow_helpers import REPO, resolved_tuning, tiny_config, write_reverse_words

SECRET = "hunter2-Sup3r"


# ---------------------------------------------------------------------------------------------
# Which URLs are taken (no server needed)


@pytest.mark.parametrize("url, said", [
    # A password as plain text, in each form a URL can carry one: refused, and never repeated.
    (f"postgresql://tuner:{SECRET}@db.example.org:5432/studies", "holds a password as plain text"),
    (f"postgresql+psycopg2://tuner:{SECRET}@db.example.org/studies", "holds a password as plain text"),
    (f"postgresql://tuner:{SECRET}@/studies?host=/var/run/postgresql", "holds a password as plain text"),
    # What Optuna would take, refused with the reason.
    ("sqlite:///study.db", "Optuna's FAQ advises against SQLite"),
    ("mysql://tuner@db/studies", "MySQL is not tested"),
    ("redis://localhost:6379", "memory only"),
    ("oracle://tuner@db/studies", "not a storage snaketune runs a study on"),
    ("study.db", "is not a storage URL"),
    ("postgresql://tuner:${SNAKETUNE_NOT_SET_ANYWHERE}@db/studies", "${SNAKETUNE_NOT_SET_ANYWHERE} is not set"),
])
def test_a_storage_url_snaketune_does_not_take_is_refused_by_its_path_without_echoing_a_password(tmp_path, url, said):
    write_reverse_words(tmp_path / "data.jsonl")
    with pytest.raises(ConfigError) as refused:
        load_tune_config(tiny_config(storage=url), tmp_path)
    problems = [p for p in refused.value.problems if p.startswith("tuning.storage: ")]
    assert len(problems) == 1 and said in problems[0], refused.value.problems
    assert SECRET not in str(refused.value)


def test_a_password_from_the_environment_or_libpq_is_taken(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_DB_PASSWORD", SECRET)
    for url in ("postgresql://tuner:${TUNER_DB_PASSWORD}@db.example.org:5432/studies",
                "postgresql://tuner@db.example.org/studies",  # PGPASSWORD or ~/.pgpass
                "postgresql:///studies?host=/var/run/postgresql"):  # a local socket, peer authentication
        assert storage_problems(url) == [], url
        write_reverse_words(tmp_path / "data.jsonl")
        assert load_tune_config(tiny_config(storage=url), tmp_path).tuning.storage == url


@pytest.mark.parametrize("password", [SECRET, "p@ss/w:rd", "br{ace}s%", "ümlaut pass"])
def test_a_password_from_the_environment_reaches_sqlalchemy_whole(monkeypatch, password):
    """Quoted into the URL as SQLAlchemy reads it, and its braces doubled for RDBStorage's format()."""
    import sqlalchemy.engine

    monkeypatch.setenv("TUNER_DB_PASSWORD", password)
    url = connect_url("postgresql://tuner:${TUNER_DB_PASSWORD}@db.example.org:5432/studies")
    parsed = sqlalchemy.engine.make_url(url.format(SCHEMA_VERSION=0))
    assert (parsed.username, parsed.password, parsed.host, parsed.database) == (
        "tuner", password, "db.example.org", "studies")
    assert password not in DatabaseStorage("postgresql://tuner:${TUNER_DB_PASSWORD}@db.example.org/studies").where


def test_the_readmes_storage_example_is_taken_with_its_variable_set(monkeypatch):
    import yaml

    from workflow_helpers import manual_text

    block = manual_text().split("<!-- storage-example -->")[1].split("```yaml")[1].split("```")[0]
    url = yaml.safe_load(block)["tuning"]["storage"]
    assert database.variables(url) == ["SNAKETUNE_DB_PASSWORD"]
    assert "is not set" in storage_problems(url)[0]
    monkeypatch.setenv("SNAKETUNE_DB_PASSWORD", SECRET)
    assert storage_problems(url) == []


@pytest.mark.parametrize("tuning, moved, shared, said", [
    ({}, False, True, None),  # a shared file system (the default): anything goes
    ({}, False, False, "snaketune: --shared-fs-usage without input-output needs a storage plugin"),
    ({}, True, False, "tuning.storage: a run whose files a storage plugin moves"),
    ({"storage": "postgresql://tuner@db.example.org/studies", "pruner": "successive_halving"}, True, False,
     "tuning.resume_pruned: a paused trial is resumed by a later slot"),  # on by default for successive halving
    ({"storage": "postgresql://tuner@db.example.org/studies", "pruner": "successive_halving", "resume_pruned": False},
     True, False, None),
    ({"storage": "postgresql://tuner@db.example.org/studies"}, True, True, None),  # a storage plugin on a shared file system
])
def test_what_a_storage_plugin_cannot_move_is_refused_by_its_path(tmp_path, tuning, moved, shared, said):
    from snaketune.check import file_movement_problems

    write_reverse_words(tmp_path / "data.jsonl")
    problems = file_movement_problems(load_tune_config(tiny_config(**tuning), tmp_path), moved, shared)
    assert problems == [] if said is None else (len(problems) == 1 and problems[0].startswith(said)), problems


def test_two_urls_name_one_database_whatever_their_password_variable():
    assert same_database("postgresql://u:${A}@h:5432/db", "postgresql://u:${B}@h:5432/db")
    assert not same_database("postgresql://u@h:5432/db", "postgresql://u@h:5432/other")
    assert not same_database("postgresql://u@h/db", None)


# ---------------------------------------------------------------------------------------------
# On a real server

@pytest.mark.system
def test_an_unreachable_server_or_a_wrong_password_is_said_with_the_url_as_written(postgres_server, monkeypatch):
    down = f"postgresql://snaketune:${{{PASSWORD_ENV}}}@127.0.0.1:{postgres_server.port + 1}/none"
    with pytest.raises(StorageUnreachable) as unreachable:
        DatabaseStorage(down).open()
    assert str(unreachable.value).startswith(f"tuning.storage: cannot open the study's database {down}: ")
    assert "Connection refused" in str(unreachable.value)
    url = postgres_server.new_database("wrong_password")
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    with pytest.raises(StorageUnreachable) as refused:
        DatabaseStorage(url).open()
    assert "password authentication failed" in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.system
def test_slots_claimed_by_processes_side_by_side_cover_a_grid_once(tmp_path, postgres_url):
    """Four trial processes start at once on a new database (its tables created by one of them,
    under the schema lock), each claims its slot: four distinct trials, the grid covered once."""
    config = tiny_config(tuner_sampler="GridSampler", storage=postgres_url, n_trials=4,
                         tunable_training_params={"learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]},
                                                  "warmup_steps": {"type": "int", "low": 0, "high": 1}})
    write_reverse_words(tmp_path / "data.jsonl")
    (tmp_path / "tune.json").write_text(json.dumps(config))
    claim = (
        "import json, sys; sys.path.insert(0, sys.argv[3])\n"
        "from snaketune.validate import load_tune_config\n"
        "from snaketune.study import open_study\n"
        "from snaketune.scheduler import claim_trial\n"
        "from snaketune import space\n"
        "tuning = load_tune_config(json.load(open('tune.json')), '.').tuning\n"
        "slot = int(sys.argv[1]); study = open_study(tuning, slot)\n"
        "trial, _ = claim_trial(study, slot, tuning)\n"
        "space.suggest(trial, tuning.space); study.tell(trial, 1.0)\n")
    processes = [subprocess.Popen([sys.executable, "-c", claim, str(slot), str(tmp_path), str(REPO / "workflow")],
                                  cwd=tmp_path, stderr=subprocess.PIPE, text=True) for slot in range(4)]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    study = load_study(tmp_path / "tuning_output")
    assert sorted(t.user_attrs["slot"] for t in study.trials) == [0, 1, 2, 3]
    assert sorted((t.params["learning_rate"], t.params["warmup_steps"]) for t in study.trials) == [
        (1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


@pytest.mark.system
def test_a_trial_that_stops_beating_is_failed_and_its_slot_runs_again_with_its_parameters(tmp_path, postgres_url,
                                                                                          monkeypatch):
    """Optuna's heartbeat: a trial beats while it trains (database.beating); one whose process
    died (a lost node) is failed by the next slot to start (scheduler.claim_trial's
    fail_stale_trials), not left RUNNING, and its own slot's next attempt has its parameters."""
    monkeypatch.setattr(database, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(database, "GRACE_SECONDS", 2)
    tuning = resolved_tuning(tmp_path, storage=postgres_url, n_trials=3)
    study = open_study(tuning, 0)
    beats, _ = scheduler.claim_trial(study, 0, tuning)
    params = search_space.suggest(beats, tuning.space)
    storage = study._storage
    with beating(storage, trial_id_of(study, beats.number)):
        dies, _ = scheduler.claim_trial(open_study(tuning, 1), 1, tuning)
        search_space.suggest(dies, tuning.space)
        with beating(storage, trial_id_of(study, dies.number)):
            pass  # it beat once, then its node was lost
        time.sleep(3.5)
        scheduler.claim_trial(open_study(tuning, 2), 2, tuning)  # a slot starts: the silent trial is failed
        states = {t.number: t.state for t in load_study(tuning.output_dir).trials}
        assert states[beats.number] == TrialState.RUNNING  # it kept beating
        assert states[dies.number] == TrialState.FAIL
    study.tell(beats, 1.0)
    retry, _ = scheduler.claim_trial(open_study(tuning, 1), 1, tuning)
    frozen = load_study(tuning.output_dir).trials[retry.number]
    assert frozen.params == load_study(tuning.output_dir).trials[dies.number].params
    assert frozen.user_attrs["retry_of"] == dies.number and params


@pytest.mark.system
def test_a_study_kept_elsewhere_than_the_config_says_is_refused_before_any_job(tmp_path, postgres_url):
    """A journal study given a storage, a database study whose storage was removed or changed, a
    second folder naming another folder's study in the same database: each refused by its YAML path."""
    from snaketune.check import accepted_config

    write_reverse_words(tmp_path / "data.jsonl")
    journal_study = resolved_tuning(tmp_path, output_dir="journal_study")
    open_study(journal_study)
    with pytest.raises(ConfigError, match=r"tuning.storage: the study in .*journal_study is kept in its journal"):
        accepted_config(tiny_config(output_dir="journal_study", storage=postgres_url), tmp_path)

    database_study = resolved_tuning(tmp_path, output_dir="database_study", storage=postgres_url)
    open_study(database_study)
    assert json.loads(database_study.layout.storage_record.read_text()) == {"storage": postgres_url,
                                                                            "study_name": "snaketune"}
    assert study_storage(database_study.layout).where == postgres_url  # what readers given the folder open
    with pytest.raises(ConfigError, match=r"tuning.storage: the study in .*database_study is kept in postgresql://"):
        accepted_config(tiny_config(output_dir="database_study"), tmp_path)
    elsewhere = postgres_url.rsplit("/", 1)[0] + "/other"
    assert storage_conflict(database_study.layout, elsewhere)
    assert storage_conflict(database_study.layout, postgres_url) is None
    accepted_config(tiny_config(output_dir="database_study", storage=postgres_url), tmp_path)  # continued
    with pytest.raises(ConfigError, match=r"tuning.study_name: the study in .*database_study is 'snaketune' in "
                                          r"postgresql://.*, not 'renamed'; an output_dir holds one study"):
        accepted_config(tiny_config(output_dir="database_study", storage=postgres_url, study_name="renamed"), tmp_path)
    changed = tiny_config(output_dir="database_study", storage=postgres_url)
    changed["tuning"]["tunable_training_params"]["learning_rate"]["high"] = 0.5
    with pytest.raises(ConfigError, match=r"tuning.tunable_\*_params: study 'snaketune' in postgresql://snaketune:"
                                          r"\$\{SNAKETUNE_TEST_DB_PASSWORD\}@.* was run with other search space"):
        accepted_config(changed, tmp_path)  # the definition check, as on the journal

    with pytest.raises(ConfigError, match=r"tuning.study_name: .* already holds a study named 'snaketune', of "
                                          r"another output_dir \(.*database_study\)"):
        accepted_config(tiny_config(output_dir="second_folder", storage=postgres_url), tmp_path)
    accepted_config(tiny_config(output_dir="second_folder", storage=postgres_url, study_name="second"), tmp_path)


@pytest.mark.system
def test_a_database_that_lost_the_study_is_refused_while_its_folders_hold_trials(tmp_path, postgres_server):
    from snaketune.check import accepted_config

    url = postgres_server.new_database("lost_study")
    write_reverse_words(tmp_path / "data.jsonl")
    tuning = resolved_tuning(tmp_path, storage=url, n_trials=1)
    study = open_study(tuning, 0)
    trial, _ = scheduler.claim_trial(study, 0, tuning)
    search_space.suggest(trial, tuning.space)
    from snaketune.recovery import trial_record
    from snaketune.layout import write_json

    frozen = study.tell(trial, 1.0)
    folder = tuning.layout.trial(0)
    folder.dir.mkdir(parents=True, exist_ok=True)
    write_json(folder.metrics, {"trial_number": frozen.number, "slot": 0, "state": "COMPLETE",
                                "trial": trial_record(frozen)})
    optuna.delete_study(study_name="snaketune", storage=DatabaseStorage(url).open())  # a restore from an old dump
    with pytest.raises(ConfigError, match=r"tuning.storage: .* holds no study 'snaketune', but .* holds 1 finished"):
        accepted_config(tiny_config(storage=url, n_trials=1), tmp_path)
    assert os.environ[PASSWORD_ENV] not in json.dumps(json.loads(tuning.layout.storage_record.read_text()))
    with pytest.raises(SnaketuneError):
        load_study(tuning.output_dir)  # a reader says so too, rather than making a new study


# ---------------------------------------------------------------------------------------------
# The study's locks in its database (snaketune.locks with database.AdvisoryLock): folders that
# share no file (two machines' local disks) hold one study's run, trials and claim locks there.

def test_a_studys_lock_keys_are_its_own_and_fit_postgresqls_oids():
    keys = {(name, kind): database.advisory_key(name, kind) for name in ("snaketune", "second") for kind in database.LOCK_KINDS}
    assert len(set(keys.values())) == len(keys)
    assert all(0 <= part < 2**31 for key in keys.values() for part in key)
    assert database.advisory_key("snaketune", "run") == keys[("snaketune", "run")]  # the same in every process


LOCK_HOLDER = """\
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from snaketune import locks
from snaketune.layout import StudyLayout
what, folder, url = sys.argv[2], StudyLayout(sys.argv[3]), sys.argv[4]
if what == "claiming":
    with locks.claiming(folder, url, "shared"):
        print("held", flush=True)
        time.sleep(2)
        Path(sys.argv[5]).write_text("releasing")
else:
    held = getattr(locks, what)(folder, url, "shared")
    print("held", flush=True)
    time.sleep(120)
"""


def _lock_holder(what: str, folder, url: str, *more: str) -> subprocess.Popen:
    """A process on 'another machine' (its own folder) holding lock `what` of study 'shared'."""
    process = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(REPO / "workflow"), what, str(folder), url, *more],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held", process.stderr.read()
    return process


def _eventually(check, seconds: float = 10.0):
    """`check()`'s result once it is truthy (the server drops a dead session's locks when it sees its socket close)."""
    deadline = time.monotonic() + seconds
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


@pytest.mark.system
def test_a_database_studys_run_lock_holds_across_folders_that_share_no_file_and_dies_with_its_holder(tmp_path, postgres_url):
    from snaketune import locks
    from snaketune.layout import StudyLayout
    from snaketune.storage import record_storage

    here, there = StudyLayout(tmp_path / "here"), StudyLayout(tmp_path / "there")
    holder = _lock_holder("hold_study", there.output_dir, postgres_url)
    try:
        with pytest.raises(locks.StudyInUse, match=rf"being run by another invocation \(snaketune run: pid {holder.pid} on "):
            locks.hold_study(here, postgres_url, "shared")
        record_storage(here, postgres_url, "shared")  # a reader given only the folder finds it by storage.json
        assert f"pid {holder.pid}" in locks.run_holder(here)
        other = locks.hold_study(here, postgres_url, "another_study")  # another study of the database is free
        other.release()
        with locks.holding_if_free(here) as held:
            assert not held  # a repair (snaketune best) leaves a running study alone
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the server drops the session's locks with its socket
        holder.wait()
    assert _eventually(lambda: locks.run_holder(here) is None)
    held = locks.hold_study(here, postgres_url, "shared")
    try:
        assert f"pid {os.getpid()}" in locks.run_holder(there, postgres_url, "shared")
        assert json.loads(here.run_lock.read_text())["pid"] == os.getpid()  # the holder named where the folder is shared
    finally:
        held.release()
    assert locks.run_holder(here) is None


@pytest.mark.system
def test_a_database_studys_trial_jobs_and_claims_are_seen_from_every_folder(tmp_path, postgres_url):
    from snaketune import locks
    from snaketune.layout import StudyLayout

    here, there = StudyLayout(tmp_path / "here"), StudyLayout(tmp_path / "there")
    trial_job = _lock_holder("hold_trial_share", there.output_dir, postgres_url)
    try:
        assert locks.trial_jobs_alive(here, postgres_url, "shared")
        with pytest.raises(locks.StudyInUse, match="trial jobs of an earlier run of the study"):
            locks.hold_study(here, postgres_url, "shared")
        with pytest.raises(locks.StudyInUse, match="trial jobs of an earlier run"):
            locks.release_stale_snakemake_locks(here, postgres_url, "shared")  # `snaketune tune` releases nothing
    finally:
        trial_job.kill()
        trial_job.wait()
    assert _eventually(lambda: not locks.trial_jobs_alive(here, postgres_url, "shared"))
    locks.hold_study(here, postgres_url, "shared").release()

    _database_setting(postgres_url, "lock_timeout", "200ms")  # as a managed server may set: not for the lock's wait
    _database_setting(postgres_url, "statement_timeout", "200ms")
    flag = tmp_path / "released"
    claimer = _lock_holder("claiming", there.output_dir, postgres_url, str(flag))
    with locks.claiming(here, postgres_url, "shared"):
        assert flag.exists()  # waited for the other folder's claim to end (2 s)
    assert claimer.wait(timeout=30) == 0


def _database_setting(url: str, name: str, value: str) -> None:
    """ALTER DATABASE ... SET: what every new session of the test's database starts with."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database.expanded_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        dbname = connection.execute(sqlalchemy.text("SELECT current_database()")).scalar()
        connection.execute(sqlalchemy.text(f'ALTER DATABASE "{dbname}" SET {name} = \'{value}\''))
    engine.dispose()


@pytest.mark.system
def test_a_lock_whose_session_the_server_ended_is_taken_again(postgres_url, monkeypatch, capfd):
    import sqlalchemy

    monkeypatch.setattr(database, "LOCK_CHECK_SECONDS", 0.2)
    lock = database.AdvisoryLock(postgres_url, "shared", "run", purpose="snaketune ended")
    assert lock.try_hold()
    lock.keep()
    engine = sqlalchemy.create_engine(database.expanded_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:  # as a server restart or a DBA would
            ended = connection.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'snaketune ended'")).all()
        assert ended == [(True,)]
        said = []

        def retaken():
            said.append(capfd.readouterr().err)
            return "took the lock again" in "".join(said)

        assert _eventually(retaken)
        assert len(database.AdvisoryLock(postgres_url, "shared", "run").holders(exclusive=True)) == 1
        assert not database.AdvisoryLock(postgres_url, "shared", "run").try_hold()  # still guarded
    finally:
        lock.release()
        engine.dispose()
    assert database.AdvisoryLock(postgres_url, "shared", "run").holders() == []


@pytest.mark.system
def test_snaketune_tune_of_a_new_database_study_is_refused_while_another_folder_runs_it(tmp_path, postgres_url):
    """`snaketune tune` asks the database (not a file, and before the study's storage.json
    exists) whether a run holds the study, and names it."""
    write_reverse_words(tmp_path / "data.jsonl")
    (tmp_path / "tune.yaml").write_text(json.dumps(tiny_config(storage=postgres_url, study_name="shared",
                                                               output_dir="here")))
    holder = _lock_holder("hold_study", tmp_path / "there", postgres_url)
    try:
        refused = subprocess.run([sys.executable, "-m", "snaketune.cli", "tune", "-c", "tune.yaml"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode != 0
    assert f"being run by another invocation (snaketune run: pid {holder.pid} on " in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.system
def test_a_lock_session_asks_the_server_to_notice_a_lost_machine_within_minutes(postgres_url):
    import sqlalchemy

    lock = database.AdvisoryLock(postgres_url, "shared", "run", purpose="snaketune test")
    assert lock.try_hold()
    try:
        shown = {name: lock._connection.execute(sqlalchemy.text(f"SHOW {name}")).scalar()
                 for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "application_name")}
    finally:
        lock.release()
    assert shown == {"tcp_keepalives_idle": "60", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "6",
                     "application_name": "snaketune test"}


@pytest.mark.system
def test_a_password_with_braces_and_percent_signs_opens_the_study_and_its_locks(tmp_path, postgres_server, monkeypatch):
    """The schema probe, Optuna's RDBStorage (which `format`s its URL) and the lock sessions all
    reach a real server with the password as set (expanded_url quotes it; connect_url, Optuna's,
    also doubles the braces a database name may hold)."""
    from snaketune import locks
    from snaketune.layout import StudyLayout

    password = "br{ace}s%20{{x}}"
    monkeypatch.setenv("SNAKETUNE_TEST_ROLE_PASSWORD", password)
    postgres_server.new_database("braced")
    url = postgres_server.new_role("braced_role", password, "braced")
    storage = DatabaseStorage(url).open()
    assert optuna.create_study(storage=storage, study_name="braced").study_name == "braced"
    locks.hold_study(StudyLayout(tmp_path / "out"), url, "braced").release()


@pytest.mark.system
def test_a_holder_of_another_role_is_said_without_what_the_server_hides(tmp_path, postgres_server, monkeypatch):
    """Without pg_read_all_stats, pg_stat_activity hides another role's session details (NULL)."""
    from snaketune import locks
    from snaketune.layout import StudyLayout

    monkeypatch.setenv("SNAKETUNE_TEST_ROLE_PASSWORD", "observer-pass")
    as_owner = postgres_server.new_database("two_roles")
    as_observer = postgres_server.new_role("observer", "observer-pass", "two_roles")
    holder = _lock_holder("hold_study", tmp_path / "there", as_owner)
    try:
        with pytest.raises(locks.StudyInUse, match="being run by another invocation"):
            locks.hold_study(StudyLayout(tmp_path / "here"), as_observer, "shared")
        assert locks.run_holder(StudyLayout(tmp_path / "here"), as_observer, "shared")
    finally:
        holder.kill()
        holder.wait()
