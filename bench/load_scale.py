"""Fill a PostgreSQL database with a registry at scale, by COPY (issue 11, reads at scale).

    python bench/load_scale.py                       # 100,000 findings, 300,000 runs, 2,000,000 measurements
    python bench/load_scale.py --findings 10000 --runs 30000 --measurements 200000
    python bench/load_scale.py --drop                # drop the scale database again

Creates the database ``--database`` (default ``registry_scale``; dropped first if it exists) on the
server of ``--server`` (default ``postgres://postgres@127.0.0.1:5432``), migrates it with
``manage.py migrate``, then writes with psycopg 3's ``COPY ... FROM STDIN``:

* 50 users; 200 tags; ``--findings`` findings (titles and summaries drawn by Zipf's law from a
  vocabulary of 5,000 words, 5% restricted, created over two years) with 1-3 tags each, their
  creator as accepted author, 20% building on an earlier finding;
* one experiment per finding with an installed builtin plugin (checkerboard, sae, induction,
  grokking, shortcut in turn), one registry reproduction, ``--runs / --findings`` succeeded runs;
* ``--measurements`` measurements: per run, both arms of the plugin's metrics (at their
  versions), topped up with diagnostic ``aux_<k>`` metrics to reach the total;
* ``--reproduced`` (default 10% of the findings) findings with a ``FindingEffects`` row shaped like
  a recompute's (axis scores with intervals, lean, evidence rungs) and status ``reproduced``.

Ids are assigned here (sequences are reset afterwards) so that rows can refer to each other
without reading anything back. Columns come from the models: a column added later gets its
field's default. Then ``VACUUM ANALYZE``. Prints the row counts and the time each table took.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLUGINS = ("checkerboard", "sae", "induction", "grokking", "shortcut")
WORDS = (
    "induction heads superposition features sparse autoencoder circuits attention checkerboard artifacts "
    "deconvolution grokking modular arithmetic fourier shortcut spurious correlation probing steering "
    "monosemantic polysemantic neurons residual stream logit lens activation patching ablation causal "
    "tracing memorisation generalisation phase change loss landscape curvature pruning distillation "
    "transformer convolution embedding tokenizer dictionary learning interpretability safety capability "
    "robustness adversarial calibration uncertainty reward hacking deception honesty refusal jailbreak"
).split()


def _database_url(server: str, name: str) -> str:
    return f"{server.rstrip('/')}/{name}"


def create_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_database_url(server, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_database_url(server, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="registry.settings.base")
    sdk = ROOT / "packages" / "interp-registry" / "src"  # the SDK, when not installed in the venv
    if sdk.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(sdk), env.get("PYTHONPATH")]))
    return env


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--skip-checks", "-v", "0"],
        check=True, env=_env(url), cwd=ROOT,
    )


def setup_django(url: str, extra_env: dict[str, str] | None = None) -> None:
    """Configure Django on ``url`` (``registry.settings.base`` unless ``extra_env`` names others)."""
    os.environ.update(_env(url), **(extra_env or {}))
    for path in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    import django

    django.setup()


# ---------------------------------------------------------------- COPY


def _columns(model: Any) -> list[Any]:
    """The model's writable columns (generated ones left out)."""
    return [f for f in model._meta.concrete_fields if not getattr(f, "generated", False)]


def _text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def copy_rows(cursor: Any, model: Any, rows: Iterable[dict[str, Any]], now: datetime) -> int:
    """COPY dicts (by attname) into the model's table; a missing column gets its field's default."""
    fields = _columns(model)
    defaults = {}
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            defaults[field.attname] = now
        else:
            defaults[field.attname] = field.get_default()  # "" for text that may not be NULL
    names = ", ".join(f'"{f.column}"' for f in fields)
    attnames = [f.attname for f in fields]
    n = 0
    with cursor.copy(f'COPY "{model._meta.db_table}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([_text(row[a]) if a in row else _text(defaults[a]) for a in attnames])
            n += 1
    return n


def reset_sequences(cursor: Any, models: Iterable[Any]) -> None:
    for model in models:
        table = model._meta.db_table
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT max(id) FROM {table}), 0) + 1,"
            " false)"
        )


# ---------------------------------------------------------------- the rows


SYLLABLES = "ka lo mi nu pe ra si to vu xe ba de fi go hu ja ke li mo ne".split()


def vocabulary(size: int = 5000) -> list[str]:
    """The domain words first, then made-up words: text drawn from it by Zipf's law (word of rank r
    with weight 1/r), as in real text, so that a search word matches from most findings (the top
    words) to a handful (the long tail)."""
    rng = random.Random(12345)
    words = list(WORDS)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


VOCABULARY = vocabulary()
_ZIPF = [1.0 / rank for rank in range(1, len(VOCABULARY) + 1)]
_CUMULATIVE = list(itertools.accumulate(_ZIPF))


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCABULARY, cum_weights=_CUMULATIVE, k=n))


def _score(rng: random.Random, mean: float, n_seeds: int) -> dict[str, Any]:
    score = rng.gauss(mean, 0.4)
    half = abs(rng.gauss(0.25, 0.08)) + 0.02
    return {
        "score": score, "ci_low": score - half, "ci_high": score + half,
        "significant": abs(score) > half, "n_seeds": n_seeds, "n_metrics": 1, "unit": "log",
        "factor": math.exp(score), "components": {"m": score}, "deterministic": False,
        "confidence": 0.95, "warnings": [],
    }


def _lean(safety: dict[str, Any], capability: dict[str, Any]) -> str:
    up_s = safety["significant"] and safety["score"] > 0
    up_c = capability["significant"] and capability["score"] > 0
    return {(True, True): "dual", (True, False): "safety-leaning", (False, True): "capability-leaning"}.get(
        (up_s, up_c), "neither"
    )


def load(args: argparse.Namespace) -> dict[str, float]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection

    from plugins.registry import get_plugin
    from registry.effects.models import FindingEffects
    from registry.findings.models import Finding, FindingAuthor, Tag
    from registry.reproductions.models import Experiment, Measurement, Reproduction, Run

    User = get_user_model()
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    timings: dict[str, float] = {}
    n_findings, n_runs, n_measurements = args.findings, args.runs, args.measurements
    runs_per_finding = max(1, n_runs // n_findings)
    total_runs = n_findings * runs_per_finding
    pairs_total = max(total_runs, n_measurements // 2)  # (baseline, intervention) pairs, >= 1 per run
    per_run = 2 * math.ceil(pairs_total / total_runs)
    n_reproduced = args.reproduced if args.reproduced is not None else n_findings // 10
    reproduced = set(rng.sample(range(1, n_findings + 1), n_reproduced))
    metrics: dict[str, list[tuple[str, int]]] = {}
    for name in PLUGINS:
        declared = [(m.name, m.version) for m in get_plugin(name).metrics]
        per_arm = max(1, per_run // 2)
        metrics[name] = (declared + [(f"aux_{k}", 1) for k in range(per_arm)])[:per_arm]
    password = make_password(None)

    def timed(name: str, model: Any, rows: Iterator[dict[str, Any]]) -> None:
        start = time.perf_counter()
        with connection.cursor() as cursor:
            count = copy_rows(cursor.cursor if hasattr(cursor, "cursor") else cursor, model, rows, now)
        timings[name] = time.perf_counter() - start
        print(f"{name:>16}: {count:>10,} rows in {timings[name]:6.1f} s", flush=True)

    n_users = 50
    timed("users", User, ({"id": i, "username": f"scale{i}", "password": password, "is_active": True,
                           "is_staff": False, "is_superuser": False, "first_name": "", "last_name": "",
                           "email": f"scale{i}@example.org", "date_joined": now} for i in range(1, n_users + 1)))
    timed("tags", Tag, ({"id": i, "name": f"{rng.choice(WORDS)}-{i}"} for i in range(1, 201)))

    def creator(fid: int) -> int:
        return 1 + fid % n_users

    span = timedelta(days=730).total_seconds()

    def findings() -> Iterator[dict[str, Any]]:
        for fid in range(1, n_findings + 1):
            restricted = fid % 20 == 0
            yield {
                "id": fid, "title": _sentence(rng, rng.randint(4, 9)).capitalize(),
                "summary": ". ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(rng.randint(1, 3))) + ".",
                "kind": ("theory", "fix", "observation")[fid % 3], "references": [],
                "created_by_id": creator(fid),
                "status": "reproduced" if fid in reproduced else "undecided",
                "visibility": "restricted" if restricted else "public",
                "created_at": now - timedelta(seconds=span * (1 - fid / n_findings) + rng.random()),
                "updated_at": now,
            }

    timed("findings", Finding, findings())

    def finding_tags() -> Iterator[dict[str, Any]]:
        pk = 0
        for fid in range(1, n_findings + 1):
            for tag in rng.sample(range(1, 201), rng.randint(1, 3)):
                pk += 1
                yield {"id": pk, "finding_id": fid, "tag_id": tag}

    timed("finding tags", Finding.tags.through, finding_tags())
    timed("authors", FindingAuthor, ({"id": fid, "finding_id": fid, "user_id": creator(fid), "status": "accepted",
                                      "created_at": now} for fid in range(1, n_findings + 1)))

    def edges() -> Iterator[dict[str, Any]]:
        pk = 0
        for fid in range(2, n_findings + 1):
            if rng.random() < 0.2:
                pk += 1
                yield {"id": pk, "from_finding_id": fid, "to_finding_id": rng.randint(max(1, fid - 500), fid - 1)}

    timed("builds_on", Finding.builds_on.through, edges())

    def plugin_of(fid: int) -> str:
        return PLUGINS[fid % len(PLUGINS)]

    timed("experiments", Experiment, ({"id": fid, "finding_id": fid, "plugin": plugin_of(fid), "params": {},
                                        "default_seeds": runs_per_finding, "created_by_id": creator(fid),
                                        "created_at": now} for fid in range(1, n_findings + 1)))
    timed("reproductions", Reproduction, ({"id": fid, "experiment_id": fid, "requested_by_id": creator(fid),
                                            "seeds": list(range(runs_per_finding)), "source": "registry",
                                            "created_at": now} for fid in range(1, n_findings + 1)))

    def runs() -> Iterator[dict[str, Any]]:
        for fid in range(1, n_findings + 1):
            for seed in range(runs_per_finding):
                yield {"id": (fid - 1) * runs_per_finding + seed + 1, "reproduction_id": fid, "seed": seed,
                       "state": "succeeded", "progress": 1.0, "hardware": "cpu", "plugin_version": "1.0.0",
                       "started_at": now, "finished_at": now, "created_at": now, "attempts": 1}

    timed("runs", Run, runs())

    def measurements() -> Iterator[dict[str, Any]]:
        pk = 0
        for fid in range(1, n_findings + 1):
            names = metrics[plugin_of(fid)]
            for seed in range(runs_per_finding):
                run_id = (fid - 1) * runs_per_finding + seed + 1
                # pairs for this run: the total spread evenly over the runs
                k = (run_id * pairs_total) // total_runs - ((run_id - 1) * pairs_total) // total_runs
                for metric, version in names[:k]:
                    base = rng.random() + 0.5
                    for arm, value in (("baseline", base), ("intervention", base * (0.6 + 0.8 * rng.random()))):
                        pk += 1
                        yield {"id": pk, "run_id": run_id, "arm": arm, "metric": metric,
                               "metric_version": version, "value": value, "censored": False}

    timed("measurements", Measurement, measurements())

    def effects() -> Iterator[dict[str, Any]]:
        for fid in sorted(reproduced):
            safety = _score(rng, 0.3, runs_per_finding)
            capability = _score(rng, 0.1 + 0.3 * safety["score"], runs_per_finding)
            first = (fid - 1) * runs_per_finding + 1
            data = {
                "finding": fid, "status": "reproduced", "n_runs": runs_per_finding,
                "run_ids": list(range(first, first + runs_per_finding)),
                "evidence_rungs": ["registry"], "experiments": [{"experiment": fid, "plugin": plugin_of(fid)}],
                "metrics": [{"metric": m, "estimate": rng.gauss(0, 1)} for m, _ in metrics[plugin_of(fid)][:4]],
                "claims": [], "axis_scores": {"safety": safety, "capability": capability},
                "lean": _lean(safety, capability),
            }
            yield {"id": fid, "finding_id": fid, "data": data, "computed_at": now, "pending": False, "error": ""}

    timed("effects", FindingEffects, effects())
    with connection.cursor() as cursor:
        reset_sequences(cursor, [User, Tag, Finding, Finding.tags.through, FindingAuthor, Finding.builds_on.through,
                                 Experiment, Reproduction, Run, Measurement, FindingEffects])
        start = time.perf_counter()
        cursor.execute("VACUUM ANALYZE")  # what autovacuum would have done: statistics, visibility map
        timings["analyze"] = time.perf_counter() - start
    print(f"{'analyze':>16}: {timings['analyze']:6.1f} s", flush=True)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("SCALE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--database", default="registry_scale")
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=300_000)
    parser.add_argument("--measurements", type=int, default=2_000_000)
    parser.add_argument("--reproduced", type=int, default=None, help="findings with effects (default 10%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", action="store_true", help="drop the scale database and exit")
    args = parser.parse_args()
    if args.drop:
        drop_database(args.server, args.database)
        print(f"dropped {args.database}")
        return
    url = _database_url(args.server, args.database)
    start = time.perf_counter()
    create_database(args.server, args.database)
    migrate(url)
    print(f"{'create+migrate':>16}: {time.perf_counter() - start:6.1f} s", flush=True)
    setup_django(url)
    load(args)
    print(f"{'total':>16}: {time.perf_counter() - start:6.1f} s  ({url})")


if __name__ == "__main__":
    main()
