"""Plugins for tests/worker/test_zygote.py, forked from the zygote (no Django here: the run's
process never has settings)."""

from __future__ import annotations

import os
import tempfile

from interp_registry.sdk import Axis, Experiment, Metric, Params

#: Changed by each run: a run forked from the zygote must find it as the zygote left it.
COUNTER = 0


class GlobalExperiment(Experiment):
    """Bumps a module-level global, leaves a marker file in its cwd and reports where it ran."""

    name = "zygote_global"
    version = "1.0.0"
    Params = Params
    metrics = (Metric("counter", Axis.DIAGNOSTIC, higher_is_better=True),
               Metric("marker_found", Axis.DIAGNOSTIC, higher_is_better=False))

    def run(self, params: Params, ctx) -> dict[str, dict[str, float]]:
        global COUNTER
        COUNTER += 1
        found = float(os.path.exists("marker-from-an-earlier-run"))
        with open("marker-from-an-earlier-run", "w") as handle:
            handle.write("x")
        ctx.log(f"cwd={os.getcwd()} tmpdir={tempfile.gettempdir()} home={os.environ.get('HOME')} "
                f"pid={os.getpid()} ppid={os.getppid()} pgid={os.getpgrp()} sid={os.getsid(0)}")
        values = {"counter": float(COUNTER), "marker_found": found}
        return {"baseline": dict(values), "intervention": dict(values)}
