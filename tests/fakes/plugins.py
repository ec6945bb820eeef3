"""Small plugins for tests: no training, exact and fast. Enabled in the test worker through
PLUGINS_EXTRA, so they are discovered exactly like installed plugins."""

from __future__ import annotations

import time

from pydantic import Field

from plugins.sdk import Axis, Experiment, Metric, NotReached, Params, Resources, Scale, check_stop


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
        deadline = time.monotonic() + params.sleep_s
        step = 0
        while time.monotonic() < deadline:
            check_stop(ctx)
            step += 1
            ctx.progress(min(0.99, 1 - (deadline - time.monotonic()) / max(params.sleep_s, 1e-9)), f"step {step}")
            time.sleep(0.05)
        ctx.log(f"echo seed {ctx.seed}")
        ctx.save_artifact("values.json", b'{"ok": true}', "application/json")
        ctx.progress(1.0, "done")
        base = params.baseline + wobble
        return {
            "baseline": {"risk": base, "skill": 1.0 + wobble, "width": 3.0},
            "intervention": {"risk": base + params.effect, "skill": 1.0 + wobble, "width": 3.0},
        }


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
