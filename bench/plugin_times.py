"""Time per seed (both arms) and each arm's metrics for every built-in plugin at its default parameters.

    python bench/plugin_times.py --seeds 5          # CPU, one thread (the registry's default)
    python bench/plugin_times.py --device cuda --preset gpu
    python bench/plugin_times.py --json times.json  # also every seed's seconds and metric values
    python bench/plugin_times.py --seeds 5 --collect bench/results/builtins_default.json
                                                    # also store the runs for bench/effects_builtins.py
Prints a Markdown table: wall and CPU seconds per seed (median), and each arm's metric as mean +/-
sample SD over the seeds. A time to an event that was not reached (``NotReached``) is never averaged:
the cell gives how many seeds reached it, with the mean +/- SD of those that did.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from interp_registry.sdk import NotReached, run_locally  # noqa: E402

from plugins.registry import all_plugins  # noqa: E402

# Every built-in plugin (the entry points in pyproject.toml); bench/collect_builtins.py imports it.
BUILTINS = (
    "checkerboard", "sae", "induction", "shortcut", "grokking", "superposition", "topk_sae", "shift", "leace",
    "smeared_keys", "grokfast", "colored_digits",
)


def plain(value: object) -> object:
    """A run's results as JSON: floats, and a censored time to an event as {"censored": true, "value": budget}."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, NotReached):
        return {"censored": True, "value": float(value.budget)}
    return float(value)


def describe(values: list[object]) -> str:
    """Mean +/- sample SD of one arm's metric over the seeds; censored times counted, not averaged."""
    reached = [float(v) for v in values if not isinstance(v, NotReached)]
    censored = [v for v in values if isinstance(v, NotReached)]
    if not reached:
        return f"not reached on {len(values)}/{len(values)} (budget {censored[0].budget:g})"
    # the SD to 2 significant digits, written out (120, not 1.2e+02)
    spread = f" ± {float(f'{statistics.stdev(reached):.2g}'):g}" if len(reached) > 1 else ""
    cell = f"{statistics.mean(reached):.4g}{spread}"
    if censored:
        cell += f" (reached on {len(reached)}/{len(values)}; budget {censored[0].budget:g})"
    return cell


def setting_key(plugin_name: str, experiment: type, params: dict | None) -> str:
    """Where a setting's runs are stored: the plugin's name at its defaults, else the name and the
    parameters that differ from the defaults (as bench/effects_builtins.py looks them up)."""
    defaults = experiment.Params().model_dump(mode="json")
    chosen = experiment.Params.model_validate(params or {}).model_dump(mode="json")
    changed = {key: value for key, value in chosen.items() if defaults.get(key) != value}
    return f"{plugin_name} {json.dumps(changed, sort_keys=True)}" if changed else plugin_name


def collect(path: Path, plugin_name: str, version: str, runs: list[dict]) -> None:
    """Store the runs in bench/collect_builtins.py's format (what bench/effects_builtins.py reads)
    under ``plugin_name`` (a :func:`setting_key`)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[plugin_name] = {"version": version, "runs": runs}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default=None, help="a preset name (tiny, gpu); default parameters otherwise")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plugins", default=",".join(BUILTINS))
    parser.add_argument("--json", default=None, help="also write every seed's seconds and metric values here")
    parser.add_argument("--params", default=None,
                        help="JSON object of parameters over the defaults (or the preset), for every plugin listed, "
                        "e.g. '{\"loss\": \"full\"}' with --plugins checkerboard")
    parser.add_argument("--collect", default=None,
                        help="also store each plugin's runs (all seeds, replacing stored ones) in this "
                        "bench/collect_builtins.py file, e.g. bench/results/builtins_default.json; with --params "
                        "under the plugin's name and the parameters changed (CPU runs without a preset only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    overrides = json.loads(args.params) if args.params else None
    preset = (args.preset or "defaults") + (f" with {args.params}" if overrides else "")
    print(f"device: {name}; torch {torch.__version__}; preset: {preset}; seeds 0..{args.seeds - 1}\n")
    print("| plugin (version) | wall s/seed (median) | CPU s/seed (median) | metric | baseline (mean ± SD) "
          "| intervention (mean ± SD) |")
    print("|---|---|---|---|---|---|")
    plugins = all_plugins()
    dump: dict[str, list[dict]] = {}
    for plugin_name in args.plugins.split(","):
        plugin = plugins[plugin_name].experiment
        times, cpu_times, results = [], [], []
        for seed in range(args.seeds):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            result, _ = run_locally(plugin, params=overrides, preset=args.preset, seed=seed, device=args.device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            results.append(result)
            run = {"seed": seed, "seconds": round(times[-1], 2), "cpu_seconds": round(cpu_times[-1], 2),
                   "load_average": round(os.getloadavg()[0], 2), "arms": plain(result)}
            dump.setdefault(plugin_name, []).append(run)
            if args.json:
                Path(args.json).write_text(json.dumps({"device": name, "preset": preset, "runs": dump}, indent=1))
        if args.collect and args.preset is None and device.type == "cpu":
            collect(Path(args.collect), setting_key(plugin_name, plugin, overrides), plugin.version, dump[plugin_name])
        first = True
        for metric in plugin.metrics:
            base = describe([r["baseline"][metric.name] for r in results])
            inter = describe([r["intervention"][metric.name] for r in results])
            cells = ((f"{plugin_name} ({plugin.version})", f"{statistics.median(times):.1f}",
                      f"{statistics.median(cpu_times):.1f}") if first else ("", "", ""))
            print(f"| {' | '.join(cells)} | {metric.name} ({metric.axis.value}) | {base} | {inter} |")
            first = False
        sys.stdout.flush()


if __name__ == "__main__":
    main()
