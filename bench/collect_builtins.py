"""Run every built-in plugin at its default parameters for N seeds and save each arm's metrics.

    python bench/collect_builtins.py --seeds 5 --out bench/results/builtins_default.json

The file feeds bench/effects_builtins.py (effects, verdicts and axis scores of the example
findings computed from real runs) without re-training. Seeds already in the file are skipped; a
plugin whose stored runs are of another version than the installed plugin is collected afresh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from interp_registry.sdk import run_locally  # noqa: E402

from bench.plugin_times import BUILTINS, plain  # noqa: E402  (every built-in, listed once)
from plugins.registry import all_plugins  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--plugins", default=",".join(BUILTINS))
    parser.add_argument("--out", default="bench/results/builtins_default.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    plugins = all_plugins()
    for name in args.plugins.split(","):
        plugin = plugins[name].experiment
        stored = data.get(name)
        if stored is not None and stored.get("version") != plugin.version:  # stale runs (metrics may differ)
            print(f"{name}: stored runs are of version {stored.get('version')}, the plugin is {plugin.version}: "
                  "collecting afresh", flush=True)
            stored = None
        if stored is None:
            stored = data[name] = {"version": plugin.version, "runs": []}
        runs = stored["runs"]
        done = {r["seed"] for r in runs}
        for seed in range(args.seeds):
            if seed in done:
                continue
            start = time.perf_counter()
            result, _ = run_locally(plugin, seed=seed)
            runs.append({"seed": seed, "seconds": round(time.perf_counter() - start, 1), "arms": plain(result)})
            out.write_text(json.dumps(data, indent=1, sort_keys=True))
            print(name, seed, f"{time.perf_counter() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
