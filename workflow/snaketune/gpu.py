"""The devices a trial runs on: a lease on free GPU(s), or what SLURM allocated, or the CPU.

Snakemake's `--resources gpu=N` only limits how many trials run at once; it never says which
device a job gets. A trial therefore leases its device(s) before torch touches CUDA, and runs with
`CUDA_VISIBLE_DEVICES` set to them.

A lease is an `flock` on a file per device (and per slot, when trials share a device). The kernel
drops an flock when the last descriptor on it closes, so a trial that is killed, even by SIGKILL,
leaves no stale lease behind. The files live in a machine-wide directory
(`/tmp/snaketune-gpu-leases`, or `tuning.gpu_lease_dir`, or `$SNAKETUNE_GPU_LEASE_DIR`) rather than
in a study's output directory: two studies on one workstation then share the devices instead of
both putting their first trial on GPU 0.

- `trials_per_gpu: 1` (default): a trial holds its device exclusively (`LOCK_EX` on the device
  file).
- `trials_per_gpu: k > 1`: a trial holds the device file shared (`LOCK_SH`, so an exclusive trial
  of another study waits) and one of k slot files exclusively: at most k trials per device.
- `gpus_per_trial: g`: g distinct devices, leased all at once or not at all (no hold-and-wait,
  so two trials waiting for devices never deadlock).
- Inside a SLURM job the allocation decides: its devices are used as given, no lease. Only when
  the allocation holds more devices than a trial needs (Snakemake run by hand inside a large
  `salloc`) do trials lease among them, in a directory private to that job.
- No GPU: the trial runs on CPU and nothing is leased.

A trial job holds its devices for one `with trial_devices(...)` block. With g > 1 devices it runs
data-parallel (snaketune.distributed), the launcher and its ranks holding the lease too.
This module is a leaf: it imports nothing heavy (no torch), so a trial leases before anything may
initialise CUDA.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from snaketune.errors import SnaketuneError
from snaketune.layout import write_json
from snaketune.records import Record, section

DEFAULT_LEASE_DIR = "/tmp/snaketune-gpu-leases"
LEASE_DIR_ENV = "SNAKETUNE_GPU_LEASE_DIR"
# The keys of `tuning:` that are device settings (validated and resolved by `resolve_section`).
SETTING_KEYS = ("trials_per_gpu", "gpus_per_trial", "gpu_devices", "gpu_lease_dir")


class LeaseError(SnaketuneError, RuntimeError):
    """A lease that can never be granted (more devices asked for than exist)."""


# -- the device settings of a config ----------------------------------------------------------------
@section
class DeviceSettings(Record):
    """The device settings of a config (`tuning.gpu` of the resolved config)."""

    trials_per_gpu: int  # tuning.trials_per_gpu: trials sharing one device
    gpus_per_trial: int  # tuning.gpus_per_trial: devices one trial runs on (data parallel)
    devices: list[str] | None  # tuning.gpu_devices; None: every device nvidia-smi lists
    lease_dir: str | None  # tuning.gpu_lease_dir (absolute); None: $SNAKETUNE_GPU_LEASE_DIR or /tmp


def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[DeviceSettings, list[str], list[str]]:
    """The device settings of a schema-filled config's `tuning:` section (the schema checked the
    types and minimums): (settings, problems, notices), the shape every section resolver has
    (`written` and `ask` are unused: nothing is asked here). A relative `gpu_lease_dir` resolves
    against `base`."""
    tuning = cfg["tuning"]
    problems = []
    devices = tuning["gpu_devices"]
    if devices is not None:
        devices = [str(d) for d in devices]
        if len(set(devices)) != len(devices):
            problems.append(f"tuning.gpu_devices: names a device twice: {devices}")
        if devices and tuning["gpus_per_trial"] > len(devices):
            problems.append(f"tuning.gpus_per_trial: {tuning['gpus_per_trial']} GPUs per trial, but "
                            f"tuning.gpu_devices lists only {len(devices)}")
    directory = tuning["gpu_lease_dir"]
    settings = DeviceSettings(
        trials_per_gpu=tuning["trials_per_gpu"],
        gpus_per_trial=tuning["gpus_per_trial"],
        devices=devices,
        lease_dir=None if directory is None else str((base / Path(directory).expanduser()).resolve()),
    )
    return settings, problems, []


# -- which devices exist ------------------------------------------------------------------------
def parse_visible_devices(value: str | None) -> list[str] | None:
    """`CUDA_VISIBLE_DEVICES` as a list; None when unset. '', '-1' or 'none' hide every device."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "-1", "none", "NoDevFiles"):
        return []
    return [d.strip() for d in value.split(",") if d.strip()]


def detect_devices(configured: list | None = None, environ=None) -> list[str]:
    """The GPU ids a trial may lease, as `CUDA_VISIBLE_DEVICES` would name them.

    In order: `tuning.gpu_devices` from the config (an empty list means CPU only);
    `CUDA_VISIBLE_DEVICES` if set; `nvidia-smi -L`; torch's device count (asked in a subprocess,
    so this process's CUDA is not initialised before `CUDA_VISIBLE_DEVICES` is set); else none.
    """
    environ = os.environ if environ is None else environ
    if configured is not None:
        return [str(d) for d in configured]
    visible = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        return visible
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        indices = re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)
        if indices:
            return indices
    if Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists():
        probe = "import torch; print(torch.cuda.device_count())"
        try:
            count = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                   timeout=300).stdout.strip()
            return [str(i) for i in range(int(count or 0))]
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return []


def lease_dir(configured: str | None = None, environ=None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(configured or environ.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)


# -- leases -------------------------------------------------------------------------------------
@dataclass
class Lease:
    """Devices held by this process until `release()` or exit (the kernel drops the locks)."""

    devices: list[str]
    files: list[str] = field(default_factory=list)
    acquired_at: float | None = None
    waited_seconds: float = 0.0
    _fds: list[int] = field(default_factory=list, repr=False)

    @property
    def visible_devices(self) -> str:
        return ",".join(self.devices)

    @property
    def fds(self) -> tuple[int, ...]:
        """The locked descriptors: pass them to a child (`pass_fds`) to share the lease with it."""
        return tuple(self._fds)

    def release(self) -> None:
        for fd in self._fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _safe(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lease file: flock needs no write access
        return os.open(path, os.O_RDONLY)
    try:  # several users of one machine lease the same devices
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass
    return fd


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _try_device(directory: Path, device: str, per_device: int) -> tuple[list[int], list[str]] | None:
    """Lock one share of `device`: (fds, file names), or None if it has no free share."""
    device_file = directory / f"gpu-{_safe(device)}.lock"
    fd = _open(device_file)
    if per_device == 1:
        if _try_lock(fd, fcntl.LOCK_EX):
            return [fd], [device_file.name]
        os.close(fd)
        return None
    if not _try_lock(fd, fcntl.LOCK_SH):  # an exclusive trial holds the whole device
        os.close(fd)
        return None
    for slot in range(per_device):
        slot_file = directory / f"gpu-{_safe(device)}.slot-{slot}.lock"
        slot_fd = _open(slot_file)
        if _try_lock(slot_fd, fcntl.LOCK_EX):
            return [fd, slot_fd], [device_file.name, slot_file.name]
        os.close(slot_fd)
    os.close(fd)
    return None


def _free_shares(directory: Path, device: str, per_device: int) -> int:
    """How many more trials `device` takes now (a probe: shares are taken, counted, dropped)."""
    probed = []
    while len(probed) < per_device:
        held = _try_device(directory, device, per_device)
        if held is None:
            break
        probed.append(held[0])
    for fds in probed:
        for fd in fds:
            os.close(fd)
    return len(probed)


def try_lease(devices: list[str], count: int = 1, per_device: int = 1,
              directory: str | Path = DEFAULT_LEASE_DIR, holder: dict | None = None) -> Lease | None:
    """Lease `count` distinct devices with a free share now, least loaded first; or None."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:  # sticky and world-writable, like /tmp: every user of the machine leases here
        os.chmod(directory, 0o1777)
    except PermissionError:
        pass
    # Spread trials over devices: with 2 GPUs and trials_per_gpu 2, two trials take one GPU each.
    order = sorted(devices, key=lambda d: -_free_shares(directory, d, per_device))
    fds, files, chosen = [], [], []
    for device in order:
        held = _try_device(directory, device, per_device)
        if held is None:
            continue
        fds += held[0]
        files += held[1]
        chosen.append(device)
        if len(chosen) == count:
            break
    if len(chosen) < count:
        for fd in fds:
            os.close(fd)
        return None
    lease = Lease(devices=chosen, files=files, acquired_at=time.time(), _fds=fds)
    note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": lease.acquired_at,
                       **(holder or {})})
    try:  # the file this lease holds exclusively says who holds it
        os.ftruncate(fds[-1], 0)
        os.pwrite(fds[-1], (note + "\n").encode(), 0)
    except OSError:
        pass
    return lease


def lease(devices: list[str], count: int = 1, per_device: int = 1,
          directory: str | Path = DEFAULT_LEASE_DIR, holder: dict | None = None,
          timeout: float | None = None, poll_seconds: float = 0.5, log=None) -> Lease:
    """Wait for `count` devices with a free share and lease them (see `try_lease`)."""
    if count > len(devices):
        raise LeaseError(f"a trial needs {count} GPU(s) (tuning.gpus_per_trial) but only "
                         f"{len(devices)} exist here: {', '.join(devices) or 'none'}")
    started = time.time()
    said = False
    while True:
        got = try_lease(devices, count, per_device, directory, holder)
        if got is not None:
            got.waited_seconds = round(time.time() - started, 3)
            return got
        if timeout is not None and time.time() - started > timeout:
            raise TimeoutError(f"no free GPU lease in {directory} after {timeout:.0f}s")
        if not said and log is not None:
            log(f"snaketune: waiting for {count} free GPU(s) of {', '.join(devices)} "
                f"(leases in {directory}; another trial or study holds them)")
            said = True
        time.sleep(poll_seconds)


# -- the policy a trial follows ---------------------------------------------------------------
def lease_for_trial(settings: DeviceSettings, environ=None, holder: dict | None = None, log=None) -> tuple[Lease | None, dict]:
    """Devices for one trial and what to record about them.

    `settings` are the resolved config's `tuning.gpu`. Sets `CUDA_VISIBLE_DEVICES` in `environ` (the
    process environment by default) before anything initialises CUDA. Returns (the lease or None,
    the trial's device metadata: `devices`, `cuda_visible_devices`, `gpu_lease`, `host`, and in a
    SLURM job `slurm_job_id` and `slurm_node`).
    """
    environ = os.environ if environ is None else environ
    count, per_device = settings.gpus_per_trial, settings.trials_per_gpu
    record = {"host": socket.gethostname()}
    slurm_job = environ.get("SLURM_JOB_ID")
    directory = lease_dir(settings.lease_dir, environ)
    if slurm_job:
        record["slurm_job_id"] = slurm_job
        if environ.get("SLURMD_NODENAME"):  # the node SLURM ran it on (its name in SLURM, not the hostname)
            record["slurm_node"] = environ["SLURMD_NODENAME"]
        # The job's devices are those SLURM put in CUDA_VISIBLE_DEVICES: none if it set none
        # (tuning.gpu_devices and nvidia-smi describe the machine, not the allocation).
        devices = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES")) or []
        if len(devices) <= count:  # the allocation is the trial's: SLURM already decided
            record.update(devices=devices, cuda_visible_devices=",".join(devices), gpu_lease=None)
            return None, record
        # Device numbers are per job (cgroups renumber them): lease in a directory of this job's.
        directory = directory / f"slurm-{slurm_job}"
    else:
        devices = detect_devices(settings.devices, environ)
    if not devices:
        environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU: nothing to lease, no GPU to stumble on
        record.update(devices=[], cuda_visible_devices="", gpu_lease=None)
        return None, record
    got = lease(devices, count, per_device, directory, holder=holder, log=log)
    environ["CUDA_VISIBLE_DEVICES"] = got.visible_devices
    record.update(devices=got.devices, cuda_visible_devices=got.visible_devices,
                  gpu_lease={"dir": str(directory), "files": got.files,
                             "acquired_at": got.acquired_at, "waited_seconds": got.waited_seconds})
    return got, record


@dataclass
class TrialDevices:
    """What `trial_devices` yields: the trial's device `record` (see `lease_for_trial`) and the
    lease behind it (None on CPU or under SLURM's allocation)."""

    record: dict
    lease: Lease | None

    @property
    def fds(self) -> tuple[int, ...]:
        """The lease's locked descriptors, to hand to a child process (`pass_fds`)."""
        return self.lease.fds if self.lease is not None else ()


@contextmanager
def trial_devices(settings: DeviceSettings, record_path: str | Path, environ=None, holder: dict | None = None,
                  log=None):
    """Lease a trial's devices for the `with` block (see `lease_for_trial`), yielding `TrialDevices`.

    The device record is written to `record_path` (a trial's `logs/devices.json`) once leased, and
    again with `released_at` (epoch seconds) when the block ends, however it ends; then the lease is
    released (a killed process's lease is dropped by the kernel all the same).
    """
    record_path = Path(record_path)
    lease, record = lease_for_trial(settings, environ=environ, holder=holder, log=log)
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record_path, record)
        yield TrialDevices(record, lease)
    finally:
        try:
            write_json(record_path, {**record, "released_at": time.time()})
        finally:
            if lease is not None:
                lease.release()


def scaled_gpu_limit(physical_gpus: int, trials_per_gpu: int) -> int:
    """Snakemake's `gpu` limit when k trials share a GPU: `--resources gpu=N` means N devices,
    and each trial declares `gpu = gpus_per_trial`, so the limit counts shares (N * k)."""
    return physical_gpus * trials_per_gpu


def peak_memory_gib(device) -> float:
    """This process's peak memory so far, in GiB (metrics.PEAK_MEMORY): on a CUDA `device` (a
    torch.device: a trial's first), the most PyTorch has reserved there (torch.cuda's
    max_memory_reserved, what an out-of-memory error counts against); on any other device, the
    process's peak resident memory (getrusage's ru_maxrss: the interpreter and imports included)."""
    if getattr(device, "type", None) == "cuda":
        import torch

        return round(torch.cuda.max_memory_reserved(device) / 2**30, 4)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 4)
