"""Run every built-in plugin at its default parameters for N seeds and save each arm's metrics.

    python bench/collect_builtins.py --seeds 5 --out bench/results/builtins_default.json

The file feeds bench/effects_builtins.py (effects, verdicts and axis scores of the example
findings computed from real runs) without re-training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from plugins.registry import all_plugins  # noqa: E402
from plugins.sdk import run_locally  # noqa: E402

BUILTINS = ("checkerboard", "sae", "induction", "shortcut", "grokking", "superposition")


def _plain(value):
    from plugins.sdk import NotReached

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, NotReached):
        return {"censored": True, "value": float(value.budget)}
    return float(value)


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
        runs = data.setdefault(name, {"version": plugin.version, "runs": []})["runs"]
        done = {r["seed"] for r in runs}
        for seed in range(args.seeds):
            if seed in done:
                continue
            start = time.perf_counter()
            result, _ = run_locally(plugin, seed=seed)
            runs.append({"seed": seed, "seconds": round(time.perf_counter() - start, 1), "arms": _plain(result)})
            out.write_text(json.dumps(data, indent=1, sort_keys=True))
            print(name, seed, f"{time.perf_counter() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
