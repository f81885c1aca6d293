"""snaketune.gpu: device leases (flock files) and the trial's devices, in real processes; and the
real Snakefile leasing fake devices (`tuning.gpu_devices`) under `--resources gpu=N`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import combinations

import pytest

from snaketune import gpu
from snaketune.config import ConfigError
from snaketune.validate import load_gpu_settings, load_tune_config
from snaketune.layout import StudyLayout
from workflow_helpers import REPO, load_study, run_snakemake, tiny_config, write_config, write_reverse_words

WORKFLOW_DIR = REPO / "workflow"


def hold_lease_script(lease_dir, devices, count=1, per_device=1, hold=0.0, out=None) -> str:
    """Python for a child process: lease, say so on stdout, hold, record (devices, start, end)."""
    return textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(WORKFLOW_DIR)!r})
        from snaketune import gpu
        lease = gpu.lease({devices!r}, count={count}, per_device={per_device},
                          directory={str(lease_dir)!r}, poll_seconds=0.05)
        start = time.time()
        print("leased", lease.visible_devices, flush=True)
        time.sleep({hold} if {hold} else 3600)
        end = time.time()
        if {out!r}:
            with open({out!r}, "a") as f:
                f.write(json.dumps({{"devices": lease.devices, "start": start, "end": end}}) + "\\n")
    """)


def overlaps(a, b) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


# -- devices ------------------------------------------------------------------------------------
def test_devices_come_from_config_then_cuda_visible_devices():
    assert gpu.detect_devices(["0", 1], environ={"CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1"]
    assert gpu.detect_devices([], environ={"CUDA_VISIBLE_DEVICES": "5"}) == []
    assert gpu.detect_devices(None, environ={"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert gpu.detect_devices(None, environ={"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu.detect_devices(None, environ={"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_lease_dir_is_machine_wide_unless_configured(tmp_path):
    assert gpu.lease_dir(None, environ={}) == gpu.Path(gpu.DEFAULT_LEASE_DIR)
    assert gpu.lease_dir(None, environ={gpu.LEASE_DIR_ENV: str(tmp_path)}) == tmp_path
    assert gpu.lease_dir(str(tmp_path / "x"), environ={gpu.LEASE_DIR_ENV: "/elsewhere"}) == tmp_path / "x"


# -- leases ---------------------------------------------------------------------------------------
def test_exclusive_leases_take_distinct_devices_until_released(tmp_path):
    first = gpu.try_lease(["0", "1"], directory=tmp_path)
    second = gpu.try_lease(["0", "1"], directory=tmp_path)
    assert sorted(first.devices + second.devices) == ["0", "1"]
    assert gpu.try_lease(["0", "1"], directory=tmp_path) is None
    first.release()
    third = gpu.try_lease(["0", "1"], directory=tmp_path)
    assert third.devices == first.devices
    # the held file says who holds it
    holder = json.loads((tmp_path / third.files[-1]).read_text())
    assert holder["pid"] == os.getpid()


def test_concurrent_processes_never_share_a_device(tmp_path):
    record = tmp_path / "held.jsonl"
    leases = tmp_path / "leases"
    children = [subprocess.Popen([sys.executable, "-c",
                                  hold_lease_script(leases, ["0", "1"], hold=0.4, out=str(record))],
                                 stdout=subprocess.PIPE, text=True) for _ in range(6)]
    for child in children:
        assert child.wait(timeout=60) == 0
    held = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(held) == 6
    for a, b in combinations(held, 2):
        if a["devices"] == b["devices"]:
            assert not overlaps(a, b), (a, b)
    assert {tuple(h["devices"]) for h in held} == {("0",), ("1",)}
    # 6 holders of 0.4 s on 2 devices: three waves, never all at once
    assert max(h["end"] for h in held) - min(h["start"] for h in held) >= 1.1


def test_a_sigkilled_holder_releases_its_lease(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", hold_lease_script(tmp_path, ["0"])],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "leased 0"
        assert gpu.try_lease(["0"], directory=tmp_path) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    again = gpu.try_lease(["0"], directory=tmp_path)
    assert again is not None and again.devices == ["0"]


def test_k_trials_share_a_device_and_exclude_an_exclusive_one(tmp_path):
    shared = [gpu.try_lease(["0"], per_device=2, directory=tmp_path) for _ in range(2)]
    assert all(lease is not None for lease in shared)
    assert len({lease.files[-1] for lease in shared}) == 2  # two different slots
    assert gpu.try_lease(["0"], per_device=2, directory=tmp_path) is None  # k = 2 reached
    assert gpu.try_lease(["0"], per_device=1, directory=tmp_path) is None  # someone shares it
    for lease in shared:
        lease.release()
    exclusive = gpu.try_lease(["0"], per_device=1, directory=tmp_path)
    assert exclusive is not None
    assert gpu.try_lease(["0"], per_device=2, directory=tmp_path) is None  # held exclusively


def test_shared_trials_spread_over_devices_first(tmp_path):
    first = gpu.try_lease(["0", "1"], per_device=2, directory=tmp_path)
    second = gpu.try_lease(["0", "1"], per_device=2, directory=tmp_path)
    assert {first.devices[0], second.devices[0]} == {"0", "1"}


def test_several_gpus_per_trial_are_leased_all_or_nothing(tmp_path):
    pair = gpu.try_lease(["0", "1", "2"], count=2, directory=tmp_path)
    assert len(set(pair.devices)) == 2
    assert gpu.try_lease(["0", "1", "2"], count=2, directory=tmp_path) is None
    # the failed attempt holds nothing: the third device is still free
    single = gpu.try_lease(["0", "1", "2"], count=1, directory=tmp_path)
    assert single.devices == [d for d in ["0", "1", "2"] if d not in pair.devices]
    with pytest.raises(gpu.LeaseError, match="gpus_per_trial"):
        gpu.lease(["0"], count=2, directory=tmp_path)


def test_a_waiting_lease_is_granted_when_a_holder_dies(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", hold_lease_script(tmp_path, ["0"])],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "leased 0"
    said = []
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {child.pid}"])
    started = time.time()
    lease = gpu.lease(["0"], directory=tmp_path, poll_seconds=0.05, log=said.append, timeout=30)
    killer.wait()
    child.wait()
    assert lease.devices == ["0"] and time.time() - started >= 0.4
    assert said and "waiting" in said[0]


# -- the trial's policy ------------------------------------------------------------------------------
def settings(tmp_path, **overrides):
    return gpu.DeviceSettings(**{"trials_per_gpu": 1, "gpus_per_trial": 1, "devices": None,
                                 "lease_dir": str(tmp_path), **overrides})


def test_a_trial_without_gpus_runs_on_cpu_and_leases_nothing(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": ""}
    lease, record = gpu.lease_for_trial(settings(tmp_path), environ=environ)
    assert lease is None and record["devices"] == [] and environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "slurm_job_id" not in record


def test_a_trial_leases_and_sets_cuda_visible_devices(tmp_path):
    environ = {}
    lease, record = gpu.lease_for_trial(settings(tmp_path, devices=["3", "4"], gpus_per_trial=2),
                                        environ=environ)
    assert sorted(lease.devices) == ["3", "4"]
    assert environ["CUDA_VISIBLE_DEVICES"] == record["cuda_visible_devices"] == lease.visible_devices
    assert record["gpu_lease"]["dir"] == str(tmp_path)


def test_on_slurm_the_allocation_decides(tmp_path):
    holder = gpu.try_lease(["0"], directory=tmp_path)  # a lease outside the job is not consulted
    environ = {"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "0"}
    lease, record = gpu.lease_for_trial(settings(tmp_path), environ=environ)
    assert lease is None and holder is not None
    assert record["slurm_job_id"] == "77" and record["cuda_visible_devices"] == "0"
    # Snakemake run by hand in a 2-GPU allocation: trials lease among the job's devices
    environ = {"SLURM_JOB_ID": "78", "CUDA_VISIBLE_DEVICES": "0,1"}
    lease, record = gpu.lease_for_trial(settings(tmp_path), environ=environ)
    assert lease is not None and record["gpu_lease"]["dir"] == str(tmp_path / "slurm-78")
    # a job without GPUs runs on CPU, whatever the machine or the config says
    environ = {"SLURM_JOB_ID": "79"}
    lease, record = gpu.lease_for_trial(settings(tmp_path, devices=["0", "1"]), environ=environ)
    assert lease is None and record["devices"] == [] and record["slurm_job_id"] == "79"


# -- config ----------------------------------------------------------------------------------------
def test_gpu_settings_are_validated_with_the_field_named(alpaca_jsonl):
    config = tiny_config(str(alpaca_jsonl), trials_per_gpu=0)
    with pytest.raises(ConfigError, match=r"tuning\.trials_per_gpu"):
        load_tune_config(config)
    config = tiny_config(str(alpaca_jsonl), gpus_per_trial=3, gpu_devices=[0, 1])
    with pytest.raises(ConfigError, match=r"tuning\.gpus_per_trial: 3 GPUs per trial"):
        load_tune_config(config)
    config = tiny_config(str(alpaca_jsonl), gpu_devices=[0, "0"])
    with pytest.raises(ConfigError, match=r"tuning\.gpu_devices: names a device twice"):
        load_tune_config(config)
    resolved = load_tune_config(tiny_config(str(alpaca_jsonl))).tuning.gpu
    assert resolved == gpu.DeviceSettings(trials_per_gpu=1, gpus_per_trial=1, devices=None, lease_dir=None)
    assert load_gpu_settings(tiny_config(str(alpaca_jsonl))) == resolved


# -- the workflow ---------------------------------------------------------------------------------
def lease_records(out, n):
    records = []
    for i in range(n):
        record = json.loads(StudyLayout(out).trial(i).devices.read_text())
        records.append({"slot": i, "devices": record["devices"],
                        "start": record["gpu_lease"]["acquired_at"], "end": record["released_at"]})
    return records


def max_concurrent(records) -> int:
    return max(sum(1 for r in records if r["start"] <= s["start"] < r["end"]) for s in records)


@pytest.fixture
def workdir(tmp_path):
    write_reverse_words(tmp_path / "data.jsonl")
    return tmp_path


@pytest.mark.workflow
def test_two_gpus_two_trials_at_a_time_never_sharing_a_device(workdir):
    # Three trials on two devices: the third takes a device one of the first two released.
    write_config(workdir, tiny_config(n_trials=3, gpu_devices=["0", "1"],
                                      gpu_lease_dir=str(workdir / "leases")))
    run_snakemake(workdir, "--resources", "gpu=2")
    out = workdir / "tuning_output"
    records = lease_records(out, 3)
    for a, b in combinations(records, 2):
        if a["devices"] == b["devices"]:
            assert not overlaps(a, b), (a, b)
    assert {tuple(r["devices"]) for r in records} == {("0",), ("1",)}
    assert max_concurrent(records) == 2
    study = load_study(out)
    assert len(study.trials) == 3
    for trial in study.trials:
        assert trial.user_attrs["cuda_visible_devices"] in ("0", "1")
        assert trial.user_attrs["gpu_lease"]["files"]


@pytest.mark.workflow
def test_two_trials_per_gpu_run_four_trials_in_two_waves_on_one_gpu(workdir):
    write_config(workdir, tiny_config(n_trials=4, gpu_devices=["0"], trials_per_gpu=2,
                                      gpu_lease_dir=str(workdir / "leases")))
    run_snakemake(workdir, "--resources", "gpu=1")  # one physical GPU: two shares
    records = lease_records(workdir / "tuning_output", 4)
    assert all(r["devices"] == ["0"] for r in records)
    assert max_concurrent(records) == 2
    # two waves: the two later trials each start after one of the first two ended
    ordered = sorted(records, key=lambda r: r["start"])
    first_ends = sorted(r["end"] for r in ordered[:2])
    assert ordered[2]["start"] >= first_ends[0] and ordered[3]["start"] >= first_ends[1]


@pytest.mark.workflow
def test_two_gpus_per_trial_is_one_data_parallel_trial(workdir):
    """gpus_per_trial 2 on two fake devices: torchrun, 2 ranks (gloo on CPU); rank 0 alone talks
    to the journal, so the study has one trial and both ranks trained its parameters."""
    write_config(workdir, tiny_config(n_trials=1, gpu_devices=["0", "1"], gpus_per_trial=2,
                                      gpu_lease_dir=str(workdir / "leases")))
    run_snakemake(workdir, "--resources", "gpu=2")
    out = workdir / "tuning_output"
    study = load_study(out)
    assert len(study.trials) == 1 and study.trials[0].state.name == "COMPLETE"
    assert study.trials[0].user_attrs["cuda_visible_devices"] in ("0,1", "1,0")
    log = StudyLayout(out).trial(0).log.read_text()
    params = json.dumps(study.trials[0].params, sort_keys=True)
    assert f"snaketune: rank 0/2 trains {params}" in log
    assert f"snaketune: rank 1/2 trains {params}" in log
    assert "[rank1]" in log  # torch DDP ran on both ranks
    curve = [json.loads(line) for line in
             StudyLayout(out).trial(0).loss_curve.read_text().splitlines()]
    assert [r["step"] for r in curve if "loss" in r] == [1, 2, 3]  # one rank writes the curve


# -- the trial's `with` block ---------------------------------------------------------------------
def test_trial_devices_records_the_lease_and_releases_it_when_the_block_ends(tmp_path):
    record_path = tmp_path / "trial_0" / "logs" / "devices.json"
    environ = {}
    with gpu.trial_devices(settings(tmp_path / "leases", devices=["0"]), record_path,
                           environ=environ, holder={"trial_dir": "t"}) as devices:
        written = json.loads(record_path.read_text())
        assert written == devices.record and "released_at" not in written
        assert devices.record["devices"] == ["0"] and environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert devices.fds and gpu.try_lease(["0"], directory=tmp_path / "leases") is None
    released = json.loads(record_path.read_text())
    assert released["released_at"] >= released["gpu_lease"]["acquired_at"]
    again = gpu.try_lease(["0"], directory=tmp_path / "leases")
    assert again is not None
    again.release()


def test_trial_devices_releases_when_the_trial_raises(tmp_path):
    record_path = tmp_path / "devices.json"
    with pytest.raises(RuntimeError, match="training failed"):
        with gpu.trial_devices(settings(tmp_path / "leases", devices=["0"]), record_path, environ={}):
            raise RuntimeError("training failed")
    assert "released_at" in json.loads(record_path.read_text())
    again = gpu.try_lease(["0"], directory=tmp_path / "leases")
    assert again is not None
    again.release()


def test_trial_devices_on_cpu_hold_nothing(tmp_path):
    with gpu.trial_devices(settings(tmp_path), tmp_path / "devices.json",
                           environ={"CUDA_VISIBLE_DEVICES": ""}) as devices:
        assert devices.lease is None and devices.fds == () and devices.record["devices"] == []
    assert "released_at" in json.loads((tmp_path / "devices.json").read_text())


def test_the_lease_module_stays_a_leaf():
    """Importing gpu (a trial does, before CUDA_VISIBLE_DEVICES is set) loads no torch."""
    code = "import sys; from snaketune import gpu; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(WORKFLOW_DIR)}).stdout
    assert out.strip() == "False"
