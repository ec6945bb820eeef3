"""Small plugins for tests: no training, exact and fast. Enabled in the test worker through
PLUGINS_EXTRA, so they are discovered exactly like installed plugins."""

from __future__ import annotations

import time

from interp_registry.sdk import Axis, Experiment, Metric, NotReached, Params, Resources, Scale, check_stop
from pydantic import Field


class EchoParams(Params):
    baseline: float = Field(1.0, description="Value of the safety metric in the baseline arm.")
    effect: float = Field(-0.5, description="Added to it in the intervention arm.")
    noise: float = Field(0.0, ge=0.0, description="Seed-dependent spread.")
    sleep_s: float = Field(0.0, ge=0.0, le=120.0, description="Seconds to work (for liveness tests).")


class EchoExperiment(Experiment):
    """Returns what its parameters say: a stand-in with known effects."""

    name = "echo"
    version = "1.0.0"
    Params = EchoParams
    metrics = (
        Metric("risk", Axis.SAFETY, higher_is_better=False, unit="score", scale=Scale.RATIO),
        Metric("skill", Axis.CAPABILITY, higher_is_better=True, unit="score", scale=Scale.RATIO),
        Metric("width", Axis.DIAGNOSTIC, higher_is_better=True, scale=Scale.RATIO),
    )
    resources = Resources(device="cpu", time_limit_s=120)
    presets = {"tiny": {}}

    def run(self, params: EchoParams, ctx) -> dict[str, dict[str, float]]:
        wobble = params.noise * (((ctx.seed * 7919) % 13) / 6.0 - 1.0)
        ctx.log(f"echo seed {ctx.seed}")  # first: a running run's page shows its log (sleep_s > 0)
        deadline = time.monotonic() + params.sleep_s
        step = 0
        while time.monotonic() < deadline:
            check_stop(ctx)
            step += 1
            ctx.progress(min(0.99, 1 - (deadline - time.monotonic()) / max(params.sleep_s, 1e-9)), f"step {step}")
            time.sleep(0.05)
        ctx.save_artifact("values.json", b'{"ok": true}', "application/json")
        ctx.progress(1.0, "done")
        base = params.baseline + wobble
        return {
            "baseline": {"risk": base, "skill": 1.0 + wobble, "width": 3.0},
            "intervention": {"risk": base + params.effect, "skill": 1.0 + wobble, "width": 3.0},
        }


class CurvesParams(EchoParams):
    curve_points: int = Field(4, ge=0, le=1000, description="Points of the 'loss' curve logged per arm.")


class CurvedEchoExperiment(EchoExperiment):
    """The echo plugin that also logs a short training curve per arm through ``ctx.log_series``:
    at step ``i`` (0, 1, ... curve_points - 1) the baseline's ``loss`` is ``baseline + i + seed / 100``
    and the intervention's that plus ``effect`` (exact values, for tests reading curves back)."""

    name = "echo_curves"
    Params = CurvesParams

    def run(self, params: CurvesParams, ctx) -> dict[str, dict[str, float]]:
        for step in range(params.curve_points):
            value = params.baseline + step + ctx.seed / 100
            ctx.log_series("loss", step, value, arm="baseline")
            ctx.log_series("loss", step, value + params.effect, arm="intervention")
        return super().run(params, ctx)


class CrashParams(Params):
    kind: str = Field("value", description="value | undeclared | nan | exit")


class CrashingExperiment(Experiment):
    """Fails in the ways a plugin can fail."""

    name = "crashing"
    version = "1.0.0"
    Params = CrashParams
    metrics = (Metric("risk", Axis.SAFETY, higher_is_better=False),)

    def run(self, params: CrashParams, ctx) -> dict[str, dict[str, float]]:
        if params.kind == "undeclared":
            return {"baseline": {"risk": 1.0, "other": 2.0}, "intervention": {"risk": 1.0}}
        if params.kind == "nan":
            return {"baseline": {"risk": float("nan")}, "intervention": {"risk": 1.0}}
        if params.kind == "exit":
            raise SystemExit(3)
        raise ValueError("the plugin broke")


class NoMetricsExperiment(Experiment):
    name = "no_metrics"
    version = "1.0.0"


class FutureApiExperiment(EchoExperiment):
    name = "future_api"
    api_version = "2.0"


BROKEN_IMPORT = "tests.fakes.does_not_exist:Nothing"


class MalformedExperiment(EchoExperiment):
    """Declares its resources as a dict: too malformed to inspect."""

    name = "malformed"
    resources = {"device": "gpu"}


class TimedParams(Params):
    budget: float = Field(100.0, description="Step budget; an arm whose event time is None is NotReached(budget).")
    baseline_steps: float | None = Field(None, description="Baseline event time (None: not reached).")
    intervention_steps: float | None = Field(40.0, description="Intervention event time (None: not reached).")
    accuracy: float = Field(0.5, description="Value of the proportion metric in both arms.")
    loss: float = Field(1.0, description="Value of the ratio metric in both arms.")
    count: float = Field(0.0, description="Value of the difference metric in both arms.")


class TimedExperiment(Experiment):
    """One metric of every scale, and a time to an event that may not be reached (for tests of
    value checks and censored storage; used through register_temporarily)."""

    name = "timed"
    version = "1.0.0"
    Params = TimedParams
    metrics = (
        Metric("steps_to_goal", Axis.CAPABILITY, higher_is_better=False, unit="steps", scale=Scale.RATIO,
               time_to_event=True),
        Metric("accuracy", Axis.CAPABILITY, higher_is_better=True, scale=Scale.PROPORTION),
        Metric("loss", Axis.SAFETY, higher_is_better=False, scale=Scale.RATIO),
        Metric("count", Axis.DIAGNOSTIC, higher_is_better=True, scale=Scale.DIFFERENCE),
    )
    presets = {"tiny": {}}

    def run(self, params: TimedParams, ctx) -> dict[str, dict[str, float | NotReached]]:
        ctx.progress(1.0, "done")

        def arm(steps: float | None) -> dict[str, float | NotReached]:
            event = NotReached(budget=params.budget) if steps is None else steps
            return {"steps_to_goal": event, "accuracy": params.accuracy, "loss": params.loss, "count": params.count}

        return {"baseline": arm(params.baseline_steps), "intervention": arm(params.intervention_steps)}


class WrongArmsExperiment(EchoExperiment):
    """Arms the registry cannot compare: refused at discovery."""

    name = "wrong_arms"
    arms = ("control", "treatment")


class CensoredProportionExperiment(EchoExperiment):
    """A time-to-event metric on the proportion scale: refused at discovery."""

    name = "censored_proportion"
    metrics = (Metric("time", Axis.SAFETY, higher_is_better=False, scale=Scale.PROPORTION, time_to_event=True),)


class UnknownScaleExperiment(EchoExperiment):
    """A metric with a scale the registry does not know: refused at discovery."""

    name = "unknown_scale"
    metrics = (Metric("risk", Axis.SAFETY, higher_is_better=False, scale="log"),)  # type: ignore[arg-type]


class OldIntervalExperiment(EchoExperiment):
    """Written for the SDK that let plugins pick the interval method: the attribute is ignored."""

    name = "old_interval"
    interval = "bootstrap"


class HostBoundParams(Params):
    slow_host: str = Field("", description="On the host of this name the run is slow and marked 2.0.")
    slow_s: float = Field(20.0, ge=0.0, le=120.0, description="Seconds to work on the slow host.")
    fast_s: float = Field(0.5, ge=0.0, le=120.0, description="Seconds to work elsewhere.")


class HostBoundExperiment(Experiment):
    """Slow on one host, fast elsewhere, and its values say which host computed them (mark 2.0 on
    the slow host, 1.0 elsewhere). Reports progress but never checks for a stop: a run cut off
    from the registry finishes and tries to write its result (for the partition test)."""

    name = "host_bound"
    version = "1.0.0"
    Params = HostBoundParams
    metrics = (
        Metric("host_mark", Axis.DIAGNOSTIC, higher_is_better=True, scale=Scale.RATIO),
        Metric("host_work_s", Axis.DIAGNOSTIC, higher_is_better=False, unit="s", scale=Scale.RATIO),
    )

    def run(self, params: HostBoundParams, ctx) -> dict[str, dict[str, float]]:
        import socket

        slow = socket.gethostname() == params.slow_host
        duration = params.slow_s if slow else params.fast_s
        start = time.monotonic()
        while time.monotonic() - start < duration:
            ctx.progress(min(0.99, (time.monotonic() - start) / max(duration, 1e-9)), "working")
            time.sleep(0.05)
        ctx.log(f"host_bound on {socket.gethostname()}")
        mark = 2.0 if slow else 1.0
        arm = {"host_mark": mark, "host_work_s": duration + 0.001}
        return {"baseline": dict(arm), "intervention": dict(arm)}


class FaultParams(Params):
    kind: str = Field("hang", description="hang | crash | raise | fork | hog | snoop | noisy | big_artifact | "
                                        "symlink_artifact")
    seconds: float = Field(1.0, ge=0.0, le=60.0, description="crash: seconds before exiting")
    megabytes: int = Field(2048, ge=1, description="hog: how much to allocate; noisy: how much to print; "
                                                   "big_artifact: how large")
    lines: int = Field(100_000, ge=0, description="noisy: how many ctx.log calls")


class FaultyExperiment(Experiment):
    """Misbehaves like a buggy plugin: for the containment tests (tests/worker/test_containment.py).

    hang: ignores should_stop; crash: os._exit(3) after ``seconds``; raise: raises; fork: leaves a
    ``sleep 1000`` behind and returns; hog: allocates ``megabytes``; snoop: looks for the registry's
    secrets, settings and database, and returns what it found (1) or not (0); noisy: prints
    ``megabytes`` without a newline, logs ``lines`` lines and sends a 2 MiB channel line, then
    returns; big_artifact: writes an artifact of ``megabytes`` past ctx (straight into its
    directory) and announces it; symlink_artifact: announces an artifact that is a symlink."""

    name = "faulty"
    version = "1.0.0"
    Params = FaultParams
    metrics = (
        Metric("found_secret", Axis.DIAGNOSTIC, higher_is_better=False),
        Metric("found_settings", Axis.DIAGNOSTIC, higher_is_better=False),
        Metric("reached_database", Axis.DIAGNOSTIC, higher_is_better=False),
        Metric("wrote_app_dir", Axis.DIAGNOSTIC, higher_is_better=False),
    )

    def run(self, params: FaultParams, ctx) -> dict[str, dict[str, float]]:
        import os
        import subprocess

        found = {"found_secret": 0.0, "found_settings": 0.0, "reached_database": 0.0, "wrote_app_dir": 0.0}
        ctx.log(f"faulty: {params.kind}")
        if params.kind == "hang":
            while True:  # never looks at ctx.should_stop()
                time.sleep(0.1)
        elif params.kind == "crash":
            time.sleep(params.seconds)
            print("about to crash", flush=True)
            os._exit(3)
        elif params.kind == "raise":
            raise RuntimeError("the faulty plugin raised")
        elif params.kind == "fork":
            child = subprocess.Popen(["sleep", "1000"])
            ctx.log(f"left pid {child.pid} behind")
        elif params.kind == "hog":
            block = bytearray(b"\x01") * (params.megabytes * 1024 * 1024)
            ctx.log(f"allocated {len(block)} bytes")
        elif params.kind == "noisy":
            import sys

            chunk = b"x" * (1024 * 1024)
            for _ in range(params.megabytes):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            filler = "y" * 150
            for i in range(params.lines):
                ctx.log(f"noisy line {i} {filler}")
            ctx.send(t="log", line="z" * (2 * 1024 * 1024))
            ctx.log("noisy: done")
        elif params.kind in ("big_artifact", "symlink_artifact"):
            from pathlib import Path

            directory = Path(ctx.scratch) / ".artifacts"
            directory.mkdir(exist_ok=True)
            target = directory / "999999"
            if params.kind == "big_artifact":
                with open(target, "wb") as handle:
                    for _ in range(params.megabytes):
                        handle.write(b"a" * (1024 * 1024))
            else:
                os.symlink("/etc/hostname", target)
            ctx.send(t="artifact", name="evidence.bin", file=target.name, content_type="application/octet-stream")
        elif params.kind == "snoop":
            secret_names = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE")
            found["found_secret"] = float(any(os.environ.get(name) for name in secret_names) or any(
                "REDIS" in key or "SECRET" in key or "PASSWORD" in key or "TOKEN" in key for key in os.environ))
            try:
                from django.conf import settings

                found["found_settings"] = float(bool(settings.DATABASES))
            except Exception:  # noqa: BLE001 - no settings module: what the child should see
                pass
            url = os.environ.get("DATABASE_URL")
            if url:
                try:
                    import psycopg

                    psycopg.connect(url, connect_timeout=3).close()
                    found["reached_database"] = 1.0
                except Exception:  # noqa: BLE001
                    pass
            try:  # a relative path: lands in the run's scratch directory, not the app directory
                with open("registry-was-here.txt", "w") as handle:
                    handle.write("x")
                from pathlib import Path

                app_dir = Path(__file__).resolve().parents[2]
                found["wrote_app_dir"] = float((app_dir / "registry-was-here.txt").exists())
            except OSError:
                pass
        return {"baseline": dict(found), "intervention": dict(found)}


class NetProbeExperiment(Experiment):
    """Reports whether it can open a TCP connection to the registry's database and whether it can
    write into the application directory (tests of RUN_ISOLATE_NETWORK / RUN_AS_USER; not
    registered as a plugin: the tests start it in a ChildRun directly)."""

    name = "netprobe"
    version = "1.0.0"
    Params = EchoParams
    metrics = (
        Metric("reached_network", Axis.DIAGNOSTIC, higher_is_better=False),
        Metric("wrote_app_dir", Axis.DIAGNOSTIC, higher_is_better=False),
    )

    def run(self, params, ctx) -> dict[str, dict[str, float]]:
        import os
        import socket
        from pathlib import Path

        found = {"reached_network": 0.0, "wrote_app_dir": 0.0}
        try:
            socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
            found["reached_network"] = 1.0
        except OSError:
            pass
        target = Path(__file__).resolve().parents[2] / f"netprobe-{os.getpid()}.txt"
        try:
            target.write_text("x")
            found["wrote_app_dir"] = 1.0
            target.unlink()
        except OSError:
            pass
        return {"baseline": dict(found), "intervention": dict(found)}


class BatchedEchoParams(EchoParams):
    bad_seed: int = Field(-1, description="This seed's result leaves out the intervention arm (an invalid result).")
    crash: bool = Field(False, description="run_seeds raises after the first progress report.")
    chatty_first: bool = Field(False, description="While it sleeps, only the first seed's context reports progress.")


class BatchedEchoExperiment(EchoExperiment):
    """The echo plugin that opts in to seeds in parallel: ``run_seeds`` serves every context in one
    loop (as a batched model would), each seed's result exactly ``run``'s, and says in each seed's
    log and artifact how many seeds it was trained with. Registered by the tests that use it."""

    name = "echo_batched"
    Params = BatchedEchoParams
    batched_seeds = True

    def run_seeds(self, params: BatchedEchoParams, ctxs) -> list[dict[str, dict[str, float]]]:
        seeds = [ctx.seed for ctx in ctxs]
        for ctx in ctxs:
            ctx.log(f"echo_batched seed {ctx.seed} with {seeds}")
            ctx.progress(0.1, "batched")
            ctx.log_series("loss", 0, float(ctx.seed), arm="baseline")
        if params.crash:
            raise RuntimeError(f"the batch of seeds {seeds} broke")
        deadline = time.monotonic() + params.sleep_s
        while time.monotonic() < deadline:
            check_stop(ctxs[0])
            if params.chatty_first:
                ctxs[0].progress(min(0.99, 1 - (deadline - time.monotonic()) / params.sleep_s), "chatty")
            time.sleep(0.05)
        results = []
        for ctx in ctxs:
            ctx.save_artifact("batch.json", f'{{"seed": {ctx.seed}, "batch": {seeds}}}'.encode(), "application/json")
            result = EchoExperiment.run(self, params.model_copy(update={"sleep_s": 0.0}), ctx)
            if ctx.seed == params.bad_seed:
                del result["intervention"]
            results.append(result)
        return results
