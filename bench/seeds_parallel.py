"""Seeds in parallel: a reproduction's seeds one after another against the same seeds trained as one
batched model (the plugin's ``run_seeds``, ``batched_seeds = True``), in one process.

    python bench/seeds_parallel.py                          # superposition, defaults, 8 seeds, 1 and 2 threads
    python bench/seeds_parallel.py --preset tiny --seeds 4 --threads 1
    python bench/seeds_parallel.py --device cuda --preset gpu

Prints, per thread count (CPU) or for the device: the wall time of each way, the throughput
(seed runs per second, both arms) and the ratio, and whether every seed's batched result equals its
one-after-another result (the largest relative difference of any value). One warm-up run of the
tiny preset comes first (imports, allocator, CUDA context). ``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from interp_registry.sdk import NotReached, run_seeds_locally  # noqa: E402

from plugins.registry import all_plugins  # noqa: E402


def largest_difference(a: dict, b: dict) -> float:
    """The largest |a - b| / max(1, |a|) over every arm and metric (inf where censoring differs)."""
    worst = 0.0
    for arm, values in a.items():
        for metric, value in values.items():
            other = b[arm][metric]
            if isinstance(value, NotReached) or isinstance(other, NotReached):
                worst = max(worst, 0.0 if value == other else math.inf)
                continue
            worst = max(worst, abs(float(other) - float(value)) / max(1.0, abs(float(value))))
    return worst


def timed(plugin: type, seeds: list[int], preset: str | None, device: str, batched: bool) -> tuple[float, list]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    pairs = run_seeds_locally(plugin, preset=preset, seeds=seeds, device=device, batched=batched)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, [results for results, _ in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugin", default="superposition")
    parser.add_argument("--preset", default=None, help="a preset name (tiny, gpu); the default parameters otherwise")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to measure, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    plugin = all_plugins()[args.plugin].experiment
    if plugin is None or not plugin.batched_seeds:
        raise SystemExit(f"plugin {args.plugin} does not train seeds in parallel (batched_seeds)")
    seeds = list(range(args.seeds))
    cuda = args.device.startswith("cuda")
    settings = [None] if cuda else [int(t) for t in args.threads.split(",")]
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    machine = torch.cuda.get_device_name() if cuda else cpu
    print(f"{args.plugin} {plugin.version}, preset {args.preset or 'defaults'}, seeds 0..{args.seeds - 1}, "
          f"device {args.device} ({machine}), torch {torch.__version__}")
    try:
        print(f"load average before: {os.getloadavg()}")
    except OSError:
        pass
    print("\n| threads | one after another (s) | batched (s) | seeds/s one after another | seeds/s batched "
          "| ratio | largest difference |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for threads in settings:
        if threads is not None:
            torch.set_num_threads(threads)
        run_seeds_locally(plugin, preset="tiny", seeds=[0], device=args.device, batched=True)  # warm-up
        alone_s, alone = timed(plugin, seeds, args.preset, args.device, batched=False)
        batched_s, batched = timed(plugin, seeds, args.preset, args.device, batched=True)
        worst = max(largest_difference(a, b) for a, b in zip(alone, batched, strict=True))
        row = {
            "threads": threads, "device": args.device, "seeds": len(seeds), "preset": args.preset,
            "one_after_another_s": round(alone_s, 3), "batched_s": round(batched_s, 3),
            "ratio": round(alone_s / batched_s, 2), "largest_difference": worst,
            "identical": alone == batched,
        }
        rows.append(row)
        print(f"| {threads or '-'} | {alone_s:.1f} | {batched_s:.1f} | {len(seeds) / alone_s:.3f} | "
              f"{len(seeds) / batched_s:.3f} | {alone_s / batched_s:.2f}x | "
              f"{'identical' if row['identical'] else f'{worst:.2g}'} |", flush=True)
    try:
        print(f"\nload average after: {os.getloadavg()}")
    except OSError:
        pass
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
