"""Effects, verdicts and axis scores of the example findings, computed by the registry's own
pipeline from real runs of the built-in plugins (default parameters and the examples' second settings).

    python bench/collect_builtins.py --seeds 7            # train the defaults: bench/results/builtins_default.json
    python bench/plugin_times.py --seeds 5 --plugins leace --params '{"baseline_arm": "random"}' \
        --collect bench/results/builtins_default.json      # a labelled second setting or control
    python bench/effects_builtins.py                      # each example at its own seed count
    python bench/effects_builtins.py --seeds 5            # every example at 5 seeds
    python bench/effects_builtins.py --keep-db var/bench  # also keep the database for the dashboard

The runs are loaded into a fresh embedded (SQLite) registry as registry runs of every experiment
of each example finding (looked up by ``bench.plugin_times.setting_key``), then
``finding_effects_recompute`` computes what the API serves. Runs collected before time-to-event
metrics were censored store the step budget as a number; such a value equal to the plugin's
default budget is read as "not reached" (said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _value(raw, metric, budget: float | None):
    from interp_registry.sdk import NotReached

    if isinstance(raw, dict):
        return NotReached(budget=raw["value"]) if raw.get("censored") else float(raw["value"])
    if metric.time_to_event and budget is not None and float(raw) >= budget:
        return NotReached(budget=float(raw))
    return float(raw)


def _fmt(value, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{100 * value:+.1f}%"
    if unit == "pt":
        return f"{100 * value:+.1f} pt"
    return f"{value:+.{digits}g}"


def _interval(value, low, high, unit: str = "") -> str:
    return f"{_fmt(value, unit)} ({_fmt(low, unit)} to {_fmt(high, unit)})"


def _effect_text(effect: dict) -> str:
    if effect is None:
        return "—"
    if effect["relative_change"] is not None or effect["relative_ci_high"] is not None:
        text = _interval(effect["relative_change"], effect["relative_ci_low"], effect["relative_ci_high"], "%")
        if effect["scale"] == "proportion":
            text += "; " + _interval(effect["effect"], effect["effect_ci_low"], effect["effect_ci_high"], "pt")
    elif effect["scale"] == "proportion":
        text = _interval(effect["effect"], effect["effect_ci_low"], effect["effect_ci_high"], "pt")
    else:
        text = _interval(effect["effect"], effect["effect_ci_low"], effect["effect_ci_high"])
    if effect.get("deterministic"):
        text += ", deterministic"
    censored = effect.get("censored")
    if censored:
        n = effect["n"]
        reached = f"reached {censored['reached_baseline']}/{n} → {censored['reached_intervention']}/{n}"
        text = f"{reached}; bound {censored['bound']}; {text}"
    return text


def _score_text(score: dict | None) -> str:
    if not score:
        return "—"
    interval = _interval(score["score"], score.get("ci_low"), score.get("ci_high"))
    return f"{interval}, ×{score.get('factor', 0):.3g}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT / "bench/results/builtins_default.json"))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per finding (default: its experiment's)")
    parser.add_argument("--keep-db", default=None, help="a folder for the registry's database (kept)")
    parser.add_argument("--json", default=None, help="write the landscape and effects as JSON here")
    args = parser.parse_args()
    var = Path(args.keep_db) if args.keep_db else Path(tempfile.mkdtemp(prefix="effects-bench-"))
    var.mkdir(parents=True, exist_ok=True)
    os.environ["REGISTRY_VAR_DIR"] = str(var.resolve())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "false")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction

    from bench.plugin_times import setting_key
    from plugins.registry import get_plugin
    from registry.effects.selectors import landscape_get
    from registry.effects.services import finding_effects_recompute
    from registry.findings.examples import examples_load
    from registry.findings.models import Finding
    from registry.reproductions.models import Measurement, Reproduction, Run
    from registry.reproductions.services import validate_results

    call_command("migrate", verbosity=0)
    data = json.loads(Path(args.data).read_text())
    reviewer, _ = get_user_model().objects.get_or_create(username="bench-reviewer")
    with transaction.atomic():
        examples_load(reproduce=False)
    report, dump = [], {}
    experiment_keys: dict[int, str] = {}
    for finding in Finding.objects.order_by("id"):
        seeds_used, missing = [], []
        for experiment in finding.experiments.order_by("id"):  # the example's and its labelled settings
            plugin = get_plugin(experiment.plugin)
            budget = experiment.params.get("steps")
            wanted = args.seeds or experiment.default_seeds
            key = setting_key(experiment.plugin, plugin, experiment.params)
            experiment_keys[experiment.pk] = key
            collected = data.get(key)
            if collected is None or collected.get("version") != plugin.version:
                # the file predates this plugin, its installed version or this setting: its runs would not match
                missing.append(key)
                report.append(f"\n(no runs for {finding.title!r}, setting {key!r} {plugin.version} in {args.data}:"
                              f" run bench/plugin_times.py --seeds {wanted} --collect FILE --plugins"
                              f" {experiment.plugin} with --params for the parameters in the key)")
                continue
            runs = sorted(collected["runs"], key=lambda r: r["seed"])[:wanted]
            seeds_used.append(f"{key}: {len(runs)} seeds")
            if len(runs) < wanted:
                report.append(f"\n(only {len(runs)} of {wanted} seeds collected for {key})")
            if Run.objects.filter(reproduction__experiment=experiment).exists():
                continue
            with transaction.atomic():
                repro = Reproduction.objects.create(
                    experiment=experiment, requested_by=reviewer, seeds=[r["seed"] for r in runs]
                )
                for raw in runs:
                    results = {
                        arm: {m.name: _value(values[m.name], m, budget) for m in plugin.metrics}
                        for arm, values in raw["arms"].items()
                    }
                    run = Run.objects.create(
                        reproduction=repro, seed=raw["seed"], state=Run.State.SUCCEEDED, hardware="cpu",
                        plugin_version=plugin.version,
                    )
                    Measurement.objects.bulk_create(
                        [
                            Measurement(run=run, arm=arm, metric=name, metric_version=version, value=value,
                                        censored=censored)
                            for arm, name, version, value, censored in validate_results(plugin, results)
                        ]
                    )
        if not seeds_used:
            report.append(f"\n(skipped {finding.title!r}: no runs of any of its settings)")
            continue
        effects = finding_effects_recompute(finding_id=finding.pk)
        dump[finding.pk] = effects
        # a status from some of the finding's settings only is not the finding's status: say so
        partial = f" **(partial: no runs of {', '.join(missing)})**" if missing else ""
        report.append(
            f"\n### {finding.title}\n\n{'; '.join(seeds_used)}; "
            f"status **{effects['status']}**, lean **{effects['lean']}**{partial}\n"
        )
        report.append("| setting | metric | axis | scale | effect (95% CI) |")
        report.append("|---|---|---|---|---|")
        for metric in effects["metrics"]:
            setting = experiment_keys.get(metric.get("experiment"), metric.get("experiment"))
            cells = (f"`{setting}`", metric["metric"], metric["axis"], metric["scale"], _effect_text(metric["effect"]))
            report.append("| " + " | ".join(cells) + " |")
        report.append("")
        for claim in effects["claims"]:
            unit = claim.get("threshold_unit", "relative")
            threshold = claim["min_relative_effect"] if claim["direction"] != "non_inferior" else claim["margin"]
            verdict = claim["verdict"]
            report.append(f"- claim `{claim['metric']}` {claim['direction']} {threshold} ({unit}): **{verdict}**")
            per_experiment = claim.get("experiments", [])
            shown = len(per_experiment) > 1 or any(entry.get("reason") for entry in per_experiment)
            for entry in per_experiment if shown else ():
                setting = experiment_keys.get(entry["experiment"], entry["experiment"])
                reason = f" — {entry['reason']}" if entry.get("reason") else ""
                report.append(f"  - in `{setting}`: {entry['verdict']}{reason}")
        for axis in ("safety", "capability"):
            score = effects["axis_scores"].get(axis)
            source = experiment_keys.get(score.get("experiment"), score.get("experiment")) if score else None
            where = f" (from `{source}`)" if score else ""
            report.append(f"- {axis} score (log units): {_score_text(score)}{where}")
    landscape = landscape_get(user=None)
    report.append("\n### Landscape\n")
    report.append(landscape["aggregate"]["answer"])
    if args.json:
        Path(args.json).write_text(json.dumps({"effects": dump, "landscape": landscape}, indent=1, default=str))
    print("\n".join(report))


if __name__ == "__main__":
    main()
