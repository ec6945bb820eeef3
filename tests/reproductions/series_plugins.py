"""A tiny plugin that logs curves, for the curve tests (no Django here: the run's child imports it)."""

from __future__ import annotations

import time

from interp_registry.sdk import Axis, Experiment, Metric, Params, Scale, check_stop
from pydantic import Field


class CurvesParams(Params):
    points: int = Field(50, ge=1, le=100_000, description="Points logged per curve.")
    then: str = Field("succeed", description="succeed | fail | wait (until cancelled) | nan | write_junk")


class CurvesExperiment(Experiment):
    """Logs ``loss`` (both arms) and ``accuracy`` (baseline), saves a figure and a checkpoint,
    then succeeds, fails, waits to be cancelled, logs a NaN, or scribbles on its curves file."""

    name = "curves"
    version = "1.0.0"
    Params = CurvesParams
    metrics = (Metric("risk", Axis.SAFETY, higher_is_better=False, scale=Scale.RATIO),)
    presets = {"tiny": {"points": 20}}

    def run(self, params: CurvesParams, ctx) -> dict[str, dict[str, float]]:
        for i in range(params.points):
            ctx.log_series("loss", 10 * i, 1.0 / (1 + i), arm="baseline")
            ctx.log_series("loss", 10 * i, 2.0 / (1 + i), arm="intervention")
            ctx.log_series("accuracy", i, i / params.points, arm="baseline")
        ctx.save_artifact("figure.json", b'{"ok": true}', "application/json")
        ctx.save_checkpoint("model.pt", b"\x00weights" * 10)
        if params.then == "fail":
            raise RuntimeError("diverged after the curves")
        if params.then == "nan":
            ctx.log_series("loss", 10 * params.points, float("nan"), arm="baseline")
        if params.then == "write_junk":
            with open("series.jsonl", "a") as stream:  # the child's cwd is its scratch directory
                stream.write('not json\n{"arm": "baseline", "name": "scribbled", "points": [[0, 0, 1.0]]}\n')
                stream.write('{"arm": "elsewhere", "name": "x", "points": [[0, 0, 1.0]]}\n')
        if params.then == "wait":
            ctx.progress(0.5, "curves logged")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                check_stop(ctx)
                time.sleep(0.05)
        return {"baseline": {"risk": 1.0}, "intervention": {"risk": 0.5}}
