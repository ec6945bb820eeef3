"""Wall time per seed (both arms) of every built-in plugin with its default parameters.

    python bench/plugin_times.py                 # CPU, one thread (the registry's default)
    python bench/plugin_times.py --device cuda --preset gpu
    python bench/plugin_times.py --json times.json  # also every seed's seconds and metric values
Prints a Markdown table: seconds per seed and each arm's metric values.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default=None, help="a preset name (tiny, gpu); default parameters otherwise")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plugins", default=",".join(BUILTINS))
    parser.add_argument("--json", default=None, help="also write every seed's seconds and metric values here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    preset = args.preset or "defaults"
    print(f"device: {name}; torch {torch.__version__}; preset: {preset}; seeds 0..{args.seeds - 1}\n")
    print("| plugin | s/seed (median) | metric | baseline (mean) | intervention (mean) |")
    print("|---|---|---|---|---|")
    plugins = all_plugins()
    dump: dict[str, list[dict]] = {}
    for plugin_name in args.plugins.split(","):
        plugin = plugins[plugin_name].experiment
        times, results = [], []
        for seed in range(args.seeds):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result, _ = run_locally(plugin, preset=args.preset, seed=seed, device=args.device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            results.append(result)
            run = {"seed": seed, "seconds": round(times[-1], 2), "arms": plain(result)}
            dump.setdefault(plugin_name, []).append(run)
            if args.json:
                Path(args.json).write_text(json.dumps({"device": name, "preset": preset, "runs": dump}, indent=1))
        first = True
        for metric in plugin.metrics:
            base = statistics.mean(r["baseline"][metric.name] for r in results)
            inter = statistics.mean(r["intervention"][metric.name] for r in results)
            cells = (plugin_name, f"{statistics.median(times):.1f}") if first else ("", "")
            print(f"| {cells[0]} | {cells[1]} | {metric.name} ({metric.axis.value}) | {base:.4g} | {inter:.4g} |")
            first = False
        sys.stdout.flush()


if __name__ == "__main__":
    main()
