"""Each run executes in a child process of its own: the launcher (parent side) and the child.

The parent (the Celery task, worker/runner.py) is the only part that talks to the database and
the broker. The child is a fresh interpreter (``python -m worker.sandbox``: never a fork of a
process that may have initialised CUDA), started in its own session with a scrubbed environment,
a scratch directory as cwd/HOME/TMPDIR and a memory limit. It never imports Django.

Protocol: the parent writes ``spec.json`` into the scratch directory; the child writes JSON lines
(progress, log, artifact, environment, error, stopped, result) to the channel fd it is given,
artifacts, ``result.json`` and its curves (``series.jsonl``, batched) into the scratch directory.
The child's stdout/stderr are kept as the tail of the run's logs. Cancellation: the parent creates
the flag file ``STOP``; the plugin's ``ctx.should_stop()`` becomes true. The parent kills the
whole process group when the run ends.

Whatever the child does, the parent's memory stays bounded: its output is read in fixed-size
chunks into a tail capped in bytes, its log lines into a window capped in characters, channel
lines longer than ``CHANNEL_LINE_MAX_BYTES`` are dropped, and artifacts are checked by size
(``max_artifact_bytes`` each, ``max_artifacts_total_bytes`` in all) before they are read, never
through a symlink. The child's files are capped by RLIMIT_FSIZE.

This module's top level imports nothing beyond the standard library, so the child starts fast.
"""

from __future__ import annotations

import _thread
import collections
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STOP_FILE = "STOP"
SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
ARTIFACT_DIR = ".artifacts"
OUTPUT_TAIL_LINES = 200
OUTPUT_TAIL_BYTES = 64 * 1024  # the tail of the child's stdout/stderr kept, in bytes
OUTPUT_CHUNK_BYTES = 64 * 1024
#: The ctx.log lines kept: the registry stores at most this many characters of a run's logs
#: (registry.reproductions.services.MAX_LOG_CHARS); older lines are dropped, and counted.
LOG_BUDGET_CHARS = 200_000
LOG_LINE_MAX_CHARS = 10_000
#: A channel message longer than this is dropped (results and artifacts travel as files).
CHANNEL_LINE_MAX_BYTES = 1024 * 1024
MAX_ARTIFACTS = 1000
MAX_ENVIRONMENT_KEYS = 200
RESULT_MAX_BYTES = 4 * 1024 * 1024
#: ctx.log_series: the child appends the points it keeps (interp_registry.series) to this file in
#: batches (every SERIES_FLUSH_POINTS points or SERIES_FLUSH_INTERVAL_S seconds, and at the end);
#: past SERIES_COMPACT_BYTES it rewrites it with what it keeps. The parent reads at most
#: SERIES_MAX_BYTES of it and replays it through the same bounds.
SERIES_FILE = "series.jsonl"
SERIES_FLUSH_POINTS = 2000
SERIES_FLUSH_INTERVAL_S = 2.0
SERIES_COMPACT_BYTES = 32 * 1024 * 1024
SERIES_MAX_BYTES = 48 * 1024 * 1024
#: A longer line of it is refused unparsed (the child's lines hold at most one series' kept points,
#: well under this): json.loads of one 48 MB line would take the parent gigabytes.
SERIES_LINE_MAX_BYTES = 4 * 1024 * 1024
CHECKPOINT_CONTENT_TYPE = "application/x-checkpoint"
FILE_SIZE_MARGIN_BYTES = 64 * 1024 * 1024  # RLIMIT_FSIZE = the artifacts' total cap + this

#: Environment variables a run's child may see: exact names, then prefixes. Nothing else (no
#: DATABASE_URL, CELERY_BROKER_URL, DJANGO_*, REDIS_*, tokens...).
ENV_ALLOWED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "TORCH_HOME", "HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME",
    "CUBLAS_WORKSPACE_CONFIG",
})
ENV_ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "CUDNN_", "NCCL_")
MEMORY_PATTERN = re.compile(r"can't allocate memory|not enough memory|out of memory|bad_alloc|cannot allocate",
                            re.IGNORECASE)


def child_environment(scratch: Path, *, extra: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The allow-listed environment for a run's child; HOME and TMPDIR are its scratch directory."""
    env = {
        key: value for key, value in os.environ.items()
        if key in ENV_ALLOWED or key.startswith(ENV_ALLOWED_PREFIXES) or key in extra
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env.update({
        "HOME": str(scratch), "TMPDIR": str(scratch), "TEMP": str(scratch), "TMP": str(scratch),
        "PYTHONPATH": os.pathsep.join(paths),  # the registry's own plugins and tests.fakes
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": "2",  # keeps address space (RLIMIT_AS) close to what is really used
    })
    return env


class ArtifactRefused(Exception):
    """An artifact (or the result file) the parent will not read: too large, too many, a symlink."""


def read_capped(path: Path, limit: int, *, what: str) -> bytes:
    """The content of the regular file ``path`` if it has at most ``limit`` bytes: checked by size
    before reading, opened with O_NOFOLLOW (a symlink is refused), never more than ``limit`` read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if path.is_symlink():
            raise ArtifactRefused(f"{what} is a symbolic link; refused") from None
        raise ArtifactRefused(f"{what} cannot be read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactRefused(f"{what} is not a regular file; refused")
        if info.st_size > limit:
            raise ArtifactRefused(f"{what} is {info.st_size} bytes; the limit is {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ArtifactRefused(f"{what} grew past the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- shared helpers


def nvidia_smi_query(field: str) -> str | None:
    """One field of the first GPU from nvidia-smi (e.g. name, driver_version); None without one."""
    try:
        output = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except Exception:
        return None
    return output.strip().splitlines()[0] if output.strip() else None


def capture_environment(device: Any, *, seed: int, plugin_version: str, deterministic: bool) -> dict[str, Any]:
    import torch

    environment: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": "cpu",
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "deterministic": deterministic,
        "plugin_version": plugin_version,
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
        environment["gpu_count"] = torch.cuda.device_count()
        environment["driver"] = nvidia_smi_query("driver_version")
        environment["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return environment


def encode_results(results: Any) -> Any:
    """Plugin results as JSON: NotReached becomes {"__not_reached__": budget}; tensors, numpy
    scalars become floats where they can; anything else its repr (the parent then refuses it)."""
    from interp_registry.sdk import NotReached

    def encode(value: Any) -> Any:
        if isinstance(value, NotReached):
            return {"__not_reached__": value.budget if isinstance(value.budget, int | float) else repr(value.budget)}
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        try:
            return float(value)
        except Exception:
            return repr(value)[:200]

    return encode(results)


def decode_results(data: Any) -> Any:
    from interp_registry.sdk import NotReached

    if isinstance(data, dict):
        if set(data) == {"__not_reached__"}:
            return NotReached(budget=data["__not_reached__"])
        return {k: decode_results(v) for k, v in data.items()}
    return data


# ---------------------------------------------------------------- the child


class ChildContext:
    """The RunContext a plugin gets in the child: everything goes to the parent over the channel."""

    def __init__(
        self, channel: Any, scratch: Path, *, seed: int, device: Any, deterministic: bool,
        max_artifact_bytes: int = 0, max_artifacts_total_bytes: int = 0,
        arms: tuple[str, ...] | None = None, max_checkpoint_bytes: int = 0,
        member: int | None = None, stop_dir: Path | None = None,
    ):
        from interp_registry.series import SeriesRecorder

        #: In a batch (several runs' seeds in one process): this run's index, sent with each of its
        #: messages ("r"); the stop request is the batch's (``stop_dir``: the process's scratch).
        self.member = member
        self.stop_dir = stop_dir or scratch

        self.series = SeriesRecorder(arms=arms)
        self._series_pending: dict[tuple[str, str], list[list[Any]]] = {}
        self._series_pending_points = 0
        self._series_written: dict[tuple[str, str], int] = {}  # the last index written per series
        self._series_flushed_at = time.monotonic()
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self.channel = channel
        self.scratch = scratch
        self.seed = seed
        self.device = device
        self.deterministic = deterministic
        self._lock = threading.Lock()
        self._last_progress = 0.0
        self._artifacts = 0
        self._artifact_bytes = 0
        self.max_artifact_bytes = max_artifact_bytes
        self.max_artifacts_total_bytes = max_artifacts_total_bytes

    def send(self, **message: Any) -> None:
        if self.member is not None:
            message["r"] = self.member
        line = json.dumps(message, default=repr) + "\n"
        with self._lock:
            self.channel.write(line)
            self.channel.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if self._series_pending_points and now - self._series_flushed_at >= SERIES_FLUSH_INTERVAL_S:
            self.flush_series()  # curves so far reach the file even if the run is killed later
        if now - self._last_progress >= 0.2 or fraction >= 1.0:
            self._last_progress = now
            self.send(t="progress", fraction=float(fraction), message=str(message)[:300])

    def log(self, message: str) -> None:
        self.send(t="log", line=f"{time.strftime('%H:%M:%S')} {message}")

    def save_artifact(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("save_artifact needs bytes")
        size = len(data)
        if self.max_artifact_bytes and size > self.max_artifact_bytes:
            raise ValueError(f"artifact {name!r} is {size} bytes; the limit is {self.max_artifact_bytes} bytes")
        if self.max_artifacts_total_bytes and self._artifact_bytes + size > self.max_artifacts_total_bytes:
            raise ValueError(f"artifact {name!r} takes the run's artifacts past their limit of "
                             f"{self.max_artifacts_total_bytes} bytes")
        if self._artifacts >= MAX_ARTIFACTS:
            raise ValueError(f"a run may save at most {MAX_ARTIFACTS} artifacts")
        self._artifacts += 1
        self._artifact_bytes += size
        path = self.scratch / ARTIFACT_DIR / f"{self._artifacts:06d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(data))
        self.send(t="artifact", name=str(name), file=path.name, content_type=str(content_type))

    def save_checkpoint(self, name: str, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("save_checkpoint needs bytes")
        if self.max_checkpoint_bytes and len(data) > self.max_checkpoint_bytes:
            raise ValueError(f"checkpoint {name!r} is {len(data)} bytes; the limit is {self.max_checkpoint_bytes} "
                             f"bytes (RUN_MAX_CHECKPOINT_BYTES)")
        self.save_artifact(name, data, CHECKPOINT_CONTENT_TYPE)

    def log_series(self, name: str, step: int, value: float, *, arm: str) -> None:
        """Checked and bounded by interp_registry.series (SeriesError at the call); the points
        kept go to SERIES_FILE in batches."""
        with self._lock:
            kept = self.series.log(name, step, value, arm=arm)
            if kept is not None:
                self._series_pending.setdefault((arm, name), []).append(list(kept))
                self._series_written[(arm, name)] = kept[0]
                self._series_pending_points += 1
            if (self._series_pending_points >= SERIES_FLUSH_POINTS
                    or time.monotonic() - self._series_flushed_at >= SERIES_FLUSH_INTERVAL_S):
                self._flush_series()

    def flush_series(self, *, final: bool = False) -> None:
        """Write the pending points; ``final``: each series' last point too (the run ended)."""
        with self._lock:
            if final:
                for arm, name, last in self.series.pending_last():
                    if self._series_written.get((arm, name)) != last[0]:
                        self._series_pending.setdefault((arm, name), []).append(list(last))
                        self._series_written[(arm, name)] = last[0]
            self._flush_series()

    def _flush_series(self) -> None:
        self._series_flushed_at = time.monotonic()
        if not self._series_pending:
            return
        path = self.scratch / SERIES_FILE
        lines = "".join(
            json.dumps({"arm": arm, "name": name, "points": points}) + "\n"
            for (arm, name), points in self._series_pending.items()
        )
        self._series_pending = {}
        self._series_pending_points = 0
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size + len(lines) > SERIES_COMPACT_BYTES:  # rewrite with what is kept (bounded by the caps)
            kept = "".join(
                json.dumps({"arm": arm, "name": name, "points": points}) + "\n"
                for arm, name, points in self.series.kept_points()
            )
            temporary = path.with_suffix(".tmp")
            temporary.write_text(kept)
            temporary.replace(path)
            return
        with path.open("a") as stream:
            stream.write(lines)

    def should_stop(self) -> bool:
        return (self.stop_dir / STOP_FILE).exists()


def _join_cgroup(path: str) -> bool:
    try:
        Path(path, "cgroup.procs").write_text(str(os.getpid()))
        return True
    except OSError:
        return False


def _limit_address_space(limit_mb: int) -> int:
    """RLIMIT_AS = what the interpreter with torch and the plugin already maps + the limit."""
    mapped = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    except OSError:
        pass
    total = mapped + limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (total, total))
    return total


def _limit_file_size(limit: int) -> None:
    """RLIMIT_FSIZE: no file the run writes grows past ``limit``; a write past it fails (EFBIG,
    an OSError the plugin sees) instead of killing the process with SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _die_with_parent(interval_s: float = 1.0) -> None:
    """If the worker that started this run dies (SIGKILL, OOM, power cut of its container), kill
    the run's whole process group: the plugin and anything it started. The worker's replacement
    runs the attempt again; nothing of this one may keep running unsupervised."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os.killpg(os.getpgrp(), signal.SIGKILL)

    # not threading.Thread.start(), which waits until the new thread runs (on a busy machine
    # milliseconds of the run's start): the watchdog begins with a sleep anyway
    _thread.start_new_thread(watch, ())


def child_main(spec_path: str, channel_fd: int) -> None:
    """Entry point of the child (``python -m worker.sandbox SPEC FD``); never returns.

    A spec with ``batch`` (``[{seed, scratch}]``, two or more) runs several runs' seeds as one
    batched model: one context per run (its own scratch directory for artifacts, curves and its
    result; its messages tagged with its index), the plugin's ``run_seeds``."""
    _die_with_parent()
    channel = os.fdopen(channel_fd, "w", buffering=1, encoding="utf-8")
    scratch = Path(spec_path).parent
    spec = json.loads(Path(spec_path).read_text())
    ctxs: list[ChildContext] = []
    code = 1
    try:
        limit_mb = int(spec.get("memory_limit_mb") or 0)
        in_cgroup = bool(spec.get("cgroup")) and _join_cgroup(spec["cgroup"])
        if spec.get("max_file_bytes"):
            _limit_file_size(int(spec["max_file_bytes"]))
        import importlib

        import torch
        from interp_registry.sdk import seed_everything

        torch.set_num_threads(int(spec.get("torch_threads") or 1))
        module, _, qualname = spec["plugin"].partition(":")
        plugin: Any = importlib.import_module(module)
        for part in qualname.split("."):
            plugin = getattr(plugin, part)
        params = plugin.Params.model_validate(spec["params"])
        device = torch.device("cuda") if spec["device"] == "gpu" and torch.cuda.is_available() else torch.device("cpu")
        deterministic = bool(spec["deterministic"])
        batch = spec.get("batch") or []
        members = batch or [{"seed": spec["seed"], "scratch": str(scratch)}]
        for index, member in enumerate(members):
            ctxs.append(ChildContext(
                channel, Path(member["scratch"]), seed=int(member["seed"]), device=device,
                deterministic=deterministic, max_artifact_bytes=int(spec.get("max_artifact_bytes") or 0),
                max_artifacts_total_bytes=int(spec.get("max_artifacts_total_bytes") or 0),
                arms=tuple(plugin.arms), max_checkpoint_bytes=int(spec.get("max_checkpoint_bytes") or 0),
                member=index if batch else None, stop_dir=scratch,
            ))
        seeds = [ctx.seed for ctx in ctxs]
        environment = capture_environment(  # once (nvidia-smi on a GPU), then per run its seed
            device, seed=seeds[0], plugin_version=plugin.version, deterministic=deterministic
        )
        environment["memory_limit"] = (
            f"cgroup memory.max {limit_mb} MiB" if in_cgroup
            else f"RLIMIT_AS {limit_mb} MiB over the runtime's baseline" if limit_mb else "none"
        )
        if batch:
            environment["batch_seeds"] = seeds
        for ctx in ctxs:
            ctx.send(t="environment", environment={**environment, "seed": ctx.seed})
            if spec["device"] == "gpu" and device.type != "cuda":
                ctx.log("a GPU was requested but this worker has none: running on the CPU")
        if limit_mb and not in_cgroup:
            _limit_address_space(limit_mb)
        seed_everything(seeds[0], deterministic=deterministic)  # a batched plugin seeds each seed itself
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for ctx in ctxs:
            together = f", trained as one batched model with seeds {seeds}" if batch else ""
            ctx.log(f"{plugin.name} {plugin.version} seed {ctx.seed} on {environment['device_name']}{together}")
        if batch:
            outcomes = plugin().run_seeds(params, ctxs)
            if not isinstance(outcomes, list | tuple) or len(outcomes) != len(ctxs):
                count = len(outcomes) if isinstance(outcomes, list | tuple) else type(outcomes).__name__
                raise TypeError(f"run_seeds() must return one result per seed ({len(ctxs)}), not {count}")
        else:
            outcomes = [plugin().run(params, ctxs[0])]
        extra: dict[str, Any] = {}
        if device.type == "cuda":  # a batch's peak is all its runs' together
            key = "batch_peak_gpu_memory_bytes" if batch else "peak_gpu_memory_bytes"
            extra[key] = torch.cuda.max_memory_allocated(device)
        for ctx, results in zip(ctxs, outcomes, strict=True):
            temporary = ctx.scratch / (RESULT_FILE + ".tmp")
            temporary.write_text(json.dumps({"results": encode_results(results), "environment": extra}))
            temporary.replace(ctx.scratch / RESULT_FILE)
            ctx.send(t="result", file=RESULT_FILE)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent (every run of a batch)
        stopped = exc.__class__.__name__ == "StopRequested" or (bool(ctxs) and ctxs[0].should_stop())
        try:
            message = {"t": "stopped"} if stopped else {
                "t": "error", "type": type(exc).__name__, "error": f"{type(exc).__name__}: {exc}"[:10_000],
                "traceback": traceback.format_exc()[-100_000:],
                "memory": isinstance(exc, MemoryError) or bool(MEMORY_PATTERN.search(str(exc)[:2000])),
            }
            channel.write(json.dumps(message, default=repr) + "\n")
            channel.flush()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
    finally:
        for ctx in ctxs:
            try:  # the curves so far, also of a failed or stopped run
                ctx.flush_series(final=True)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)  # threads the plugin left behind do not keep the child alive


# ---------------------------------------------------------------- the parent side


class _Reader:
    """A daemon thread reading one of a run's pipes, joinable like a ``threading.Thread`` but
    started without waiting for it to be scheduled (``Thread.start`` does: on a busy machine that
    is milliseconds of each run's start, twice)."""

    def __init__(self, target: Any, stream: Any):
        self._done = threading.Event()

        def body() -> None:
            try:
                target(stream)
            finally:
                self._done.set()

        _thread.start_new_thread(body, ())

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


class ChildRun:
    """One run's child process as seen from the worker: start, watch, stop, collect, clean up."""

    def __init__(
        self,
        *,
        run_id: int,
        plugin: str,
        params: dict[str, Any],
        seed: int,
        device: str,
        deterministic: bool,
        torch_threads: int = 1,
        memory_limit_mb: int = 0,
        scratch_root: str = "",
        cgroup_parent: str = "",
        env_passthrough: list[str] | tuple[str, ...] = (),
        max_artifact_bytes: int = 50 * 1024 * 1024,
        max_artifacts_total_bytes: int = 200 * 1024 * 1024,
        max_checkpoint_bytes: int = 50 * 1024 * 1024,
        isolate_network: bool = False,
        run_as_user: str = "",
        start_method: str = "zygote",
        preload: list[str] | tuple[str, ...] = (),
        batch: list[tuple[int, int]] | tuple[tuple[int, int], ...] = (),
    ):
        self.run_id = run_id
        #: The process's runs: this one first, then ``batch``'s (run id, seed) pairs, trained with
        #: it as one batched model. Each member has its own scratch directory and keeps its own
        #: messages, logs, artifacts, curves and result; the process (its exit, signals, output,
        #: cgroup) is this object's, which the members read through ``lead``.
        self.lead = self
        self.seed = seed
        #: "zygote": forked from the worker's preloaded zygote (worker/zygote.py) where that is
        #: safe; "spawn": a fresh ``python -m worker.sandbox``. ``started_by`` says which it was.
        self.start_method = start_method
        self.preload = tuple(preload)
        self.started_by = ""
        self.zygote_error: str | None = None
        self._pidfd: int | None = None
        self.isolate_network = isolate_network
        self.run_as_user = run_as_user
        self.memory_limit_mb = memory_limit_mb
        self.max_artifact_bytes = max_artifact_bytes
        self.max_artifacts_total_bytes = max_artifacts_total_bytes
        root = Path(scratch_root or tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=root))
        self.cgroup = self._make_cgroup(cgroup_parent, memory_limit_mb) if memory_limit_mb else None
        self.spec = {
            "plugin": plugin, "params": params, "seed": seed, "device": device, "deterministic": deterministic,
            "torch_threads": torch_threads, "memory_limit_mb": memory_limit_mb,
            "cgroup": str(self.cgroup) if self.cgroup else "",
            "max_artifact_bytes": max_artifact_bytes, "max_artifacts_total_bytes": max_artifacts_total_bytes,
            "max_file_bytes": (max_artifacts_total_bytes + FILE_SIZE_MARGIN_BYTES) if max_artifacts_total_bytes else 0,
            "max_checkpoint_bytes": max_checkpoint_bytes,
        }
        self.env = child_environment(self.scratch, extra=list(env_passthrough))
        self.process: subprocess.Popen | None = None
        self._init_run_state()
        self.signals_sent: list[str] = []
        self._threads: list[_Reader] = []
        self.started_at = 0.0
        self.spawn_s: float | None = None  # until the child's first message: the per-run start cost
        self.members: list[ChildRun] = [self]
        try:
            for member_run_id, member_seed in batch:
                self.members.append(self._member(member_run_id, member_seed, root))
        except BaseException:  # e.g. a full disk: nothing of this process is left behind
            self.cleanup()
            raise
        if len(self.members) > 1:
            self.spec["batch"] = [{"seed": member.seed, "scratch": str(member.scratch)} for member in self.members]

    def _init_run_state(self) -> None:
        """What this run keeps of the process's messages and output (each run of a batch its own)."""
        self.lock = threading.Lock()
        self.fraction: float | None = None
        self.message: str | None = None
        self.progress_changed = False
        self.lines: collections.deque[str] = collections.deque()  # ctx.log lines, LOG_BUDGET_CHARS at most
        self.logs_changed = False  # a line or output arrived since take_logs
        self.lines_chars = 0
        self.lines_dropped = 0
        self.channel_dropped = 0  # channel messages over CHANNEL_LINE_MAX_BYTES
        self._tail = bytearray()  # the last OUTPUT_TAIL_BYTES of the child's stdout/stderr (the lead's)
        self.output_bytes = 0
        self.artifacts: list[tuple[str, str, str]] = []
        self.artifacts_dropped = 0
        self.environment: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None
        self.stopped = False
        self.has_result = False

    def _member(self, run_id: int, seed: int, root: Path) -> ChildRun:
        """Another run of this process's batch: its own scratch directory and per-run state."""
        member = object.__new__(ChildRun)
        member.__dict__.update({
            key: value for key, value in self.__dict__.items()
            if key in ("start_method", "preload", "isolate_network", "run_as_user", "memory_limit_mb",
                       "max_artifact_bytes", "max_artifacts_total_bytes", "started_by", "zygote_error")
        })
        member.lead, member.run_id, member.seed = self, run_id, seed
        member.scratch = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=root))
        member.cgroup, member.spec, member.env = None, {}, {}
        member.process, member._pidfd, member._threads = None, None, []
        member._init_run_state()
        member.signals_sent = self.signals_sent  # one process: the same signals
        member.started_at, member.spawn_s, member.members = 0.0, None, [member]
        return member

    @staticmethod
    def _make_cgroup(parent: str, limit_mb: int) -> Path | None:
        """A cgroup v2 child of RUN_CGROUP_PARENT with memory.max; None where that is not possible."""
        if not parent:
            return None
        try:
            path = Path(parent) / f"run-{os.getpid()}-{time.time_ns()}"
            path.mkdir()
            (path / "memory.max").write_text(str(limit_mb * 1024 * 1024))
            try:
                (path / "memory.swap.max").write_text("0")
            except OSError:
                pass
            return path
        except OSError:
            return None

    # -- lifecycle

    def command(self, write_fd: int) -> list[str]:
        """The child's command line: ``python -m worker.sandbox SPEC FD``, inside a network
        namespace of its own (no interface but loopback) when ``isolate_network`` is set."""
        command = [sys.executable, "-m", "worker.sandbox", str(self.scratch / SPEC_FILE), str(write_fd)]
        if self.isolate_network:
            # As root a plain new network namespace; otherwise through a user namespace, where the
            # kernel allows unprivileged ones. Where neither works the run fails with unshare's error.
            prefix = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
            command = [*prefix, "--", *command]
        return command

    def _user_options(self) -> dict[str, Any]:
        """Run the child as RUN_AS_USER (an unprivileged account): its scratch directory is handed
        to that user; it can then write nowhere the registry's user owns."""
        if not self.run_as_user:
            return {}
        import pwd

        account = pwd.getpwnam(self.run_as_user)
        for member in self.members:
            for path in [member.scratch, *member.scratch.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)
        self.env["HOME"] = str(self.scratch)
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def zygote_allowed(self) -> bool:
        """Whether this run may be forked from the zygote: never for a GPU run (CUDA must be
        initialised in a fresh process), nor with network isolation or another user (both need
        a fresh exec through unshare / setuid)."""
        return (self.start_method == "zygote" and self.spec["device"] != "gpu" and not self.isolate_network
                and not self.run_as_user)

    def _start_forked(self) -> bool:
        """Fork the run from the zygote; False (the zygote is discarded) where that failed."""
        from worker import zygote as zygotes

        try:
            zygote = zygotes.zygote_for(self.env, self.preload)
        except Exception as exc:  # noqa: BLE001 - the run is started the fresh-exec way
            self.zygote_error = f"{type(exc).__name__}: {exc}"
            return False
        if zygote is None:
            self.zygote_error = "no subreaper support on this system"
            return False
        channel_read, channel_write = os.pipe()
        output_read, output_write = os.pipe()
        self.started_at = time.monotonic()
        try:
            pid = zygote.fork(
                spec=str(self.scratch / SPEC_FILE), cwd=str(self.scratch), env=self.env,
                module=self.spec["plugin"].partition(":")[0], fds=(channel_write, output_write),
            )
        except zygotes.ZygoteUnavailable as exc:
            zygotes.zygote_discard(zygote)
            os.close(channel_read)
            os.close(output_read)
            self.zygote_error = str(exc)
            return False
        finally:
            os.close(channel_write)
            os.close(output_write)
        self.process = zygotes.ForkedProcess(pid, os.fdopen(output_read, "rb"))  # type: ignore[assignment]
        self._start_readers(os.fdopen(channel_read, "rb"))
        return True

    def _start_readers(self, channel: Any) -> None:
        assert self.process is not None
        for member in self.members[1:]:
            member.process, member.started_by, member.zygote_error = self.process, self.started_by, self.zygote_error
            member.started_at = self.started_at
        try:
            self._pidfd = os.pidfd_open(self.process.pid)
        except (OSError, AttributeError):
            self._pidfd = None
        for target, stream in ((self._read_channel, channel), (self._read_output, self.process.stdout)):
            self._threads.append(_Reader(target, stream))

    def start(self) -> None:
        (self.scratch / SPEC_FILE).write_text(json.dumps(self.spec))
        if self.zygote_allowed():
            if self._start_forked():
                self.started_by = "zygote"
                return
        self.started_by = "spawn"
        read_fd, write_fd = os.pipe()
        self.started_at = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command(write_fd),
                cwd=self.scratch, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True, close_fds=True,
                **self._user_options(),
            )
        finally:
            os.close(write_fd)
        self._start_readers(os.fdopen(read_fd, "rb"))

    @staticmethod
    def _channel_lines(stream: Any) -> Any:
        """The channel's lines, each read with a bounded readline: a line longer than
        CHANNEL_LINE_MAX_BYTES is skipped to its end and yielded as None."""
        while True:
            line = stream.readline(CHANNEL_LINE_MAX_BYTES + 1)
            if not line:
                return
            if len(line) > CHANNEL_LINE_MAX_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = stream.readline(CHANNEL_LINE_MAX_BYTES)
                yield None
                continue
            yield line

    def _add_line(self, line: str) -> None:
        """Keep a ctx.log line: the window holds LOG_BUDGET_CHARS at most, the oldest lines go first."""
        if len(line) > LOG_LINE_MAX_CHARS:
            line = line[:LOG_LINE_MAX_CHARS] + f" [... {len(line) - LOG_LINE_MAX_CHARS} characters cut]"
        self.lines.append(line)
        self.logs_changed = True
        self.lines_chars += len(line) + 1
        while self.lines_chars > LOG_BUDGET_CHARS and len(self.lines) > 1:
            self.lines_chars -= len(self.lines.popleft()) + 1
            self.lines_dropped += 1

    def _read_channel(self, stream: Any) -> None:
        with stream:
            for line in self._channel_lines(stream):
                if line is None:
                    with self.lock:
                        self.channel_dropped += 1
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if self.spawn_s is None:
                    self.spawn_s = round(time.monotonic() - self.started_at, 3)
                    for member in self.members[1:]:
                        member.spawn_s = self.spawn_s
                index = message.get("r")
                if index is None:  # the process's own message (an error, a stop): every run's
                    targets = self.members
                elif type(index) is int and 0 <= index < len(self.members) and len(self.members) > 1:
                    targets = [self.members[index]]
                else:
                    continue
                for target in targets:
                    target._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        """One channel message of this run."""
        with self.lock:
            kind = message.get("t")
            if kind == "progress":
                self.fraction, self.message = message.get("fraction"), message.get("message")
                self.progress_changed = True
            elif kind == "log":
                self._add_line(str(message.get("line", "")))
            elif kind == "artifact":
                if len(self.artifacts) >= MAX_ARTIFACTS:
                    self.artifacts_dropped += 1
                else:
                    self.artifacts.append((str(message.get("name", ""))[:300], str(message.get("file", "")),
                                           str(message.get("content_type", ""))[:100]))
            elif kind == "environment":
                environment = message.get("environment")
                if isinstance(environment, dict):
                    for key, value in environment.items():
                        if key in self.environment or len(self.environment) < MAX_ENVIRONMENT_KEYS:
                            self.environment[key] = value
            elif kind == "error":
                self.error = message
            elif kind == "stopped":
                self.stopped = True
            elif kind == "result":
                self.has_result = True

    def _read_output(self, stream: Any) -> None:
        """Read the child's stdout/stderr in fixed-size chunks, keeping the last OUTPUT_TAIL_BYTES
        (a stream without a newline is never buffered whole)."""
        with stream:
            while True:
                chunk = stream.read1(OUTPUT_CHUNK_BYTES)
                if not chunk:
                    return
                with self.lock:
                    self.logs_changed = True
                    self.output_bytes += len(chunk)
                    self._tail += chunk
                    if len(self._tail) > OUTPUT_TAIL_BYTES:
                        del self._tail[:len(self._tail) - OUTPUT_TAIL_BYTES]
                for member in self.members[1:]:  # the process's output is in every run's log
                    with member.lock:
                        member.logs_changed = True

    @property
    def output(self) -> list[str]:
        """The last lines of the child's stdout/stderr (at most OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES)."""
        lead = self.lead  # the process's output, whichever of its runs asks
        with lead.lock:
            tail = bytes(lead._tail)
            cut = lead.output_bytes > len(tail)
        lines = tail.decode("utf-8", "replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if cut and lines:
            lines[0] = "[...] " + lines[0]  # the start of this line was dropped
        return lines[-OUTPUT_TAIL_LINES:]

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """The exit status once the process ended, else None after ``timeout``; woken by the
        process's pidfd the moment it ends (no polling delay)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pidfd = self._pidfd
            if pidfd is None:
                try:
                    return self.process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    return None
            try:
                select.select([pidfd], [], [], remaining)
            except (OSError, ValueError):
                time.sleep(min(remaining, 0.005))
        return code

    def request_stop(self) -> None:
        """Cooperative: the plugin's ``ctx.should_stop()`` becomes true."""
        try:
            (self.scratch / STOP_FILE).touch()
        except OSError:
            pass

    def kill_group(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the child's whole process group (its session); False when nothing is left."""
        if self.process is None:
            return False
        if sig != signal.SIGKILL or self.process.poll() is None:
            self.signals_sent.append(signal.Signals(sig).name)
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            # not (yet) a group leader: a run process that has not reached its setsid() (a spare
            # just handed its run, a fresh fork not yet scheduled) is signalled alone
            if self.process.poll() is not None:
                return False
            try:
                os.kill(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                return False
        except PermissionError:
            return False
        if self.cgroup is not None and sig == signal.SIGKILL:
            try:
                (self.cgroup / "cgroup.kill").write_text("1")
            except OSError:
                pass
        return True

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            for line in (self.cgroup / "memory.events").read_text().splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill" and int(count) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def finish(self) -> None:
        """Kill whatever is left of the process group and wait for the reader threads."""
        self.kill_group(signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self.process.returncode is not None:
                self._reap_group()
        if self._pidfd is not None:
            try:
                os.close(self._pidfd)
            except OSError:
                pass
            self._pidfd = None
        for thread in self._threads:
            thread.join(timeout=5)

    def _reap_group(self, timeout: float = 2.0) -> None:
        """Reap what the run left behind in its process group and was re-parented to this worker
        (a subreaper once it uses the zygote): no zombie accumulates in a long-lived worker."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(-self.process.pid, os.WNOHANG)
            except (ChildProcessError, OSError):
                return
            if pid == 0:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)

    def cleanup(self) -> None:
        for member in self.members:  # a batch's runs' directories too
            shutil.rmtree(member.scratch, ignore_errors=True)
        if self.cgroup is not None:
            for _ in range(20):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)

    # -- what the child left

    def take_logs(self) -> str | None:
        """The run's log so far (:meth:`logs`) when it changed since the last call, else None."""
        with self.lock:
            if not self.logs_changed:
                return None
            self.logs_changed = False
        return self.logs()

    def take_progress(self) -> tuple[float | None, str | None] | None:
        with self.lock:
            if not self.progress_changed:
                return None
            self.progress_changed = False
            return self.fraction, self.message

    def logs(self) -> str:
        with self.lock:
            lines = list(self.lines)
            dropped, channel_dropped = self.lines_dropped, self.channel_dropped
            artifacts_dropped = self.artifacts_dropped
        with self.lead.lock:
            output_bytes = self.lead.output_bytes
        if dropped:
            lines.insert(0, f"[{dropped} earlier lines dropped]")
        if channel_dropped:
            lines.append(f"[{channel_dropped} messages longer than {CHANNEL_LINE_MAX_BYTES} bytes dropped]")
        if artifacts_dropped:
            lines.append(f"[{artifacts_dropped} artifacts past the first {MAX_ARTIFACTS} dropped]")
        output = self.output
        if output:
            heading = "--- output of the run's process (last lines) ---"
            if output_bytes > OUTPUT_TAIL_BYTES:
                heading = f"--- output of the run's process (last {OUTPUT_TAIL_BYTES} of {output_bytes} bytes) ---"
            lines += [heading, *output]
        return "\n".join(lines)

    def load_results(self) -> tuple[Any, dict[str, Any]]:
        data = json.loads(read_capped(self.scratch / RESULT_FILE, RESULT_MAX_BYTES, what="the result file"))
        return decode_results(data["results"]), data.get("environment") or {}

    def load_artifacts(self) -> dict[str, tuple[bytes, str]]:
        """The run's artifacts; ArtifactRefused for one over ``max_artifact_bytes``, all of them
        over ``max_artifacts_total_bytes`` (sizes checked before reading), or a symlink."""
        if self.artifacts_dropped:
            raise ArtifactRefused(f"the run saved more than {MAX_ARTIFACTS} artifacts")
        if (self.scratch / ARTIFACT_DIR).is_symlink():
            raise ArtifactRefused(f"the run's {ARTIFACT_DIR} directory is a symbolic link; refused")
        unlimited = 1 << 62
        per_file = self.max_artifact_bytes or unlimited
        paths: list[tuple[str, Path, str]] = []
        total = 0
        for name, file, content_type in self.artifacts:
            path = self.scratch / ARTIFACT_DIR / Path(file).name
            try:
                info = path.lstat()  # a symlink's own size: read_capped refuses it below
            except OSError:
                continue
            total += info.st_size
            paths.append((name, path, content_type))
        if self.max_artifacts_total_bytes and total > self.max_artifacts_total_bytes:
            raise ArtifactRefused(f"the run's artifacts are {total} bytes in all; the limit is "
                                  f"{self.max_artifacts_total_bytes} bytes")
        artifacts: dict[str, tuple[bytes, str]] = {}
        read = 0
        for name, path, content_type in paths:
            remaining = self.max_artifacts_total_bytes - read if self.max_artifacts_total_bytes else unlimited
            data = read_capped(path, min(per_file, remaining), what=f"artifact {name!r}")
            read += len(data)
            artifacts[name] = (data, content_type)
        return artifacts

    def load_series(self, *, arms: tuple[str, ...] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """The run's curves (``[{arm, name, steps, values, logged}]``, bounded as
        interp_registry.series says) from SERIES_FILE, read at most SERIES_MAX_BYTES, never through
        a symlink; and what was refused, in words (malformed lines are dropped and counted)."""
        from interp_registry.series import SeriesError, SeriesRecorder

        path = self.scratch / SERIES_FILE
        if not path.exists() and not path.is_symlink():
            return [], []
        try:
            data = read_capped(path, SERIES_MAX_BYTES, what="the curves file")
        except ArtifactRefused as exc:
            return [], [f"curves dropped: {exc}"]
        recorder = SeriesRecorder(arms=arms)
        refused: dict[str, int] = {}
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                if len(line) > SERIES_LINE_MAX_BYTES:  # the child writes far shorter ones; bounded memory
                    raise SeriesError(f"a line is longer than {SERIES_LINE_MAX_BYTES} bytes")
                message = json.loads(line)
                points = message["points"]
                if not isinstance(message, dict) or not isinstance(points, list):
                    raise SeriesError("a line must be {arm, name, points}")
                for point in points:
                    if not isinstance(point, list) or len(point) != 3:
                        raise SeriesError("a point must be [index, step, value]")
                    recorder.add_indexed(message["arm"], message["name"], *point)
            except (ValueError, KeyError, TypeError, RecursionError) as exc:  # SeriesError is a ValueError
                reason = str(exc)[:300] if isinstance(exc, SeriesError) else "malformed line"
                if reason not in refused and len(refused) >= 20:  # a bounded report, whatever the file holds
                    reason = "other reasons"
                refused[reason] = refused.get(reason, 0) + 1
        return recorder.series(), [f"curves: {count} line(s) refused: {reason}" for reason, count in refused.items()]

    def exit_description(self) -> tuple[dict[str, Any], str]:
        """``{"exit_code": n}`` or ``{"exit_signal": "SIGKILL"}``, and the same in words."""
        code = self.process.returncode if self.process is not None else None
        if code is None:
            return {}, "the run's process did not end"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return {"exit_signal": name}, f"the run's process was killed by {name}"
        return {"exit_code": code}, f"the run's process exited with code {code}"


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]))
