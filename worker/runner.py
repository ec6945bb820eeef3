"""Execute one run of a plugin: claim it, run it, write the result, whatever happens.

Any exception (any ``BaseException``) ends with the run recorded as failed or timed out, with the
error and traceback: a run is never left ``running`` by this process.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
import threading
import time
import traceback
import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection

import registry
from plugins.sdk import RunContext, StopRequested, seed_everything
from registry.errors import ApplicationError
from registry.reproductions import services
from registry.reproductions.models import Run

logger = logging.getLogger(__name__)


class RegistryContext(RunContext):
    """The run context a plugin gets inside the registry: progress, logs, artifacts, cancellation."""

    def __init__(self, *, run_id: int, token: uuid.UUID, seed: int, device: Any, deterministic: bool):
        self.run_id = run_id
        self.token = token
        self.seed = seed
        self.device = device
        self.deterministic = deterministic
        self.artifacts: dict[str, tuple[bytes, str]] = {}
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._fraction: float | None = None
        self._message: str | None = None
        self._last_write = 0.0
        self._stopped = False

    def progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._fraction, self._message = float(fraction), message
        now = time.monotonic()
        if now - self._last_write >= 0.5 or fraction >= 1.0:
            self._last_write = now
            try:
                self.flush()
            except Exception:  # a transient database error must not fail a healthy run
                logger.exception("run %s: could not record progress", self.run_id)
                close_old_connections()

    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        logger.info("run %s: %s", self.run_id, message)
        with self._lock:
            self.lines.append(line)

    def save_artifact(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("save_artifact needs bytes")
        self.artifacts[name] = (bytes(data), content_type)

    def should_stop(self) -> bool:
        return self._stopped

    def logs(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def flush(self) -> None:
        """Write heartbeat and progress; notice a cancellation."""
        with self._lock:
            fraction, message = self._fraction, self._message
        state = services.run_heartbeat(run_id=self.run_id, token=self.token, progress=fraction, message=message)
        if state != Run.State.RUNNING:
            self._stopped = True


class Heartbeat(threading.Thread):
    """Keeps the run's heartbeat fresh even while the plugin is busy between progress calls."""

    def __init__(self, ctx: RegistryContext, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-{ctx.run_id}")
        self.ctx = ctx
        self.interval = interval
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(self.interval):
                try:
                    self.ctx.flush()
                except Exception:
                    logger.exception("heartbeat for run %s failed", self.ctx.run_id)
                    connection.close()  # reconnect on the next beat
        finally:
            connection.close()


def _choose_device(requested: str) -> Any:
    import torch

    if requested == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


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
        "registry_version": registry.__version__,
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
        environment["gpu_count"] = torch.cuda.device_count()
        environment["driver"] = nvidia_smi_query("driver_version")
        environment["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return environment


def nvidia_smi_query(field: str) -> str | None:
    """One field of the first GPU from nvidia-smi (e.g. name, driver_version); None without one."""
    import subprocess

    try:
        output = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except Exception:
        return None
    return output.strip().splitlines()[0] if output.strip() else None


def run_execute(run_id: int, *, worker_host: str | None = None) -> str:
    """Claim and execute one run. Returns what happened, for the task's log."""
    close_old_connections()
    host = worker_host or f"{socket.gethostname()}:{os.getpid()}"
    token = services.run_claim(run_id=run_id, worker_host=host)
    if token is None:
        return "skipped: the run is not queued (duplicate or late message)"
    ctx: RegistryContext | None = None
    heartbeat: Heartbeat | None = None
    environment: dict[str, Any] = {}
    started = time.monotonic()
    try:
        import torch

        run = Run.objects.select_related("reproduction__experiment").get(pk=run_id)
        experiment = run.reproduction.experiment

        plugin = services.plugin_resolve(experiment.plugin)
        services._check_version_constraint(plugin, experiment.plugin_version_constraint)
        params = plugin.Params.model_validate(experiment.params)
        torch.set_num_threads(settings.RUN_TORCH_THREADS)
        device = _choose_device(run.reproduction.device)
        deterministic = settings.RUN_DETERMINISTIC
        ctx = RegistryContext(
            run_id=run_id, token=token, seed=run.seed, device=device, deterministic=deterministic
        )
        environment = capture_environment(
            device, seed=run.seed, plugin_version=plugin.version, deterministic=deterministic
        )
        if run.reproduction.device == "gpu" and device.type != "cuda":
            ctx.log("a GPU was requested but this worker has none: running on the CPU")
        heartbeat = Heartbeat(ctx, settings.RUN_HEARTBEAT_INTERVAL_S)
        heartbeat.start()
        seed_everything(run.seed, deterministic=deterministic)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ctx.log(f"{plugin.name} {plugin.version} seed {run.seed} on {environment['device_name']}")
        results = plugin().run(params, ctx)
        rows = services.validate_results(plugin, results)
        environment["wall_time_s"] = round(time.monotonic() - started, 3)
        if device.type == "cuda":
            environment["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        heartbeat.done.set()
        close_old_connections()  # a connection that died during a long run is replaced, not fatal
        stored = services.run_succeed(
            run_id=run_id,
            token=token,
            rows=rows,
            artifacts=ctx.artifacts,
            environment=environment,
            hardware=environment["device_name"],
            plugin_version=plugin.version,
            logs=ctx.logs(),
        )
        return "succeeded" if stored else "discarded: the run was no longer ours"
    except BaseException as exc:  # noqa: BLE001 - every failure must be recorded
        environment["wall_time_s"] = round(time.monotonic() - started, 3)
        logs = ctx.logs() if ctx else ""
        if isinstance(exc, StopRequested) or (ctx is not None and ctx.should_stop()):
            return "stopped: the run was cancelled"
        state = Run.State.TIMED_OUT if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded) else Run.State.FAILED
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ApplicationError):
            message = exc.message
        close_old_connections()
        try:
            services.run_fail(
                run_id=run_id, token=token, state=state, error=message, traceback=traceback.format_exc(),
                logs=logs, environment=environment,
            )
        except Exception:  # e.g. unstorable text: record the failure with the essentials only
            logger.exception("run %s: could not record the failure in full", run_id)
            services.run_fail(run_id=run_id, token=token, state=state, error=message[:1000])
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return state
    finally:
        if heartbeat is not None:
            heartbeat.done.set()
            heartbeat.join(timeout=5)
