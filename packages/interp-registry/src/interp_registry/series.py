"""Training curves: what ``ctx.log_series(name, step, value, arm=...)`` keeps, and how.

The rules (the same in ``LocalContext``, in a registry worker's run process and on the server):

- a series is one ``(arm, name)`` pair; a run has at most :data:`MAX_SERIES` of them. The next
  new one raises :class:`SeriesError` at the call (a plugin bug, found by ``run_locally``).
- ``name`` matches :data:`NAME_PATTERN` (letters, digits, ``_ . -``; at most 100 characters);
  ``arm`` is one of the experiment's arms.
- ``step`` is an integer >= 0, strictly increasing within a series; ``value`` a finite number.
  A NaN or an infinity raises :class:`SeriesError` at the call: it is never stored, never
  silently dropped.
- a series keeps at most :data:`MAX_POINTS` points. Beyond that it is thinned deterministically,
  never failing the run: of the ``n`` points logged it keeps those whose index (0, 1, 2... in
  the order they were logged) is a multiple of ``stride``, the smallest power of two with
  ``ceil(n / stride) < MAX_POINTS``, and always the last point logged. Memory stays bounded
  while the run goes on, and the same points are kept whatever the batching on the way.

:class:`SeriesRecorder` applies them; ``logged`` says how many points were logged before thinning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_SERIES = 32
MAX_POINTS = 10_000
MAX_STEP = 2**53  # exact in a float (JSON numbers) and in a PostgreSQL bigint
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

__all__ = ["MAX_POINTS", "MAX_SERIES", "NAME_PATTERN", "SeriesError", "SeriesRecorder", "check_point", "stride_for"]


class SeriesError(ValueError):
    """A ``log_series`` call the registry refuses (bad name, arm, step or value; too many series)."""


def stride_for(count: int, max_points: int = MAX_POINTS) -> int:
    """The smallest power of two ``s`` with ``ceil(count / s) < max_points`` (room for the last point)."""
    stride = 1
    while -(-count // stride) >= max_points:
        stride *= 2
    return stride


def check_point(
    name: Any, step: Any, value: Any, arm: Any, *, arms: tuple[str, ...] | None = None
) -> tuple[str, int, float, str]:
    """``(name, step, value, arm)`` checked and normalised; :class:`SeriesError` naming what is wrong."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SeriesError(f"series name {name!r} must be 1-100 letters, digits, '_', '.' or '-', starting "
                          f"with a letter or digit")
    if not isinstance(arm, str) or (arms is not None and arm not in arms):
        expected = f"one of {list(arms)}" if arms is not None else "a string"
        raise SeriesError(f"series {name!r}: arm {arm!r} must be {expected}")
    if isinstance(step, bool) or not isinstance(step, int):
        try:  # numpy / torch integers
            import operator

            step = operator.index(step)
        except TypeError:
            raise SeriesError(f"series {name!r} ({arm}): step {step!r} must be an integer") from None
    if not 0 <= step <= MAX_STEP:
        raise SeriesError(f"series {name!r} ({arm}): step {step} must be between 0 and {MAX_STEP}")
    if isinstance(value, bool | str | bytes | bytearray):
        raise SeriesError(f"series {name!r} ({arm}) step {step}: value {value!r} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SeriesError(f"series {name!r} ({arm}) step {step}: value {value!r} must be a number") from None
    except OverflowError:  # an integer past the largest float
        number = math.inf
    if not math.isfinite(number):
        raise SeriesError(f"series {name!r} ({arm}) step {step}: value {number} is not finite; "
                          f"curves hold finite numbers only")
    return name, int(step), number, arm


@dataclass
class _Series:
    stride: int = 1
    logged: int = 0  # points logged (the index of the next one)
    last_step: int = -1
    points: dict[int, tuple[int, float]] = field(default_factory=dict)  # index -> (step, value)
    last: tuple[int, int, float] | None = None  # (index, step, value) of the last point logged


class SeriesRecorder:
    """The bounded curves of one run (see the module's rules). ``add`` returns whether the point
    is kept for now (a writer passes on only those); ``series()`` gives what is kept."""

    def __init__(self, *, arms: tuple[str, ...] | None = None, max_series: int = MAX_SERIES,
                 max_points: int = MAX_POINTS):
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.arms = tuple(arms) if arms is not None else None
        self.max_series = max_series
        self.max_points = max_points
        self._series: dict[tuple[str, str], _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def log(self, name: Any, step: Any, value: Any, *, arm: Any) -> tuple[int, int, float] | None:
        """Check and record one point; the ``(index, step, value)`` to pass on if it is kept, else None."""
        name, step, value, arm = check_point(name, step, value, arm, arms=self.arms)
        series = self._get(arm, name)
        if step <= series.last_step:
            raise SeriesError(f"series {name!r} ({arm}): step {step} must be greater than the previous "
                              f"step {series.last_step}")
        index = series.logged
        return (index, step, value) if self._add(series, index, step, value) else None

    def add_indexed(self, arm: str, name: str, index: int, step: int, value: float) -> bool:
        """Record a point logged elsewhere with its original index (a run's file, replayed by the
        parent). Indices and steps must increase within a series; SeriesError otherwise."""
        name, step, value, arm = check_point(name, step, value, arm, arms=self.arms)
        # steps start at 0 and increase, so the point logged at index i has a step >= i: a larger
        # index is forged (and would make ``logged`` and the thinning unbounded)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= step:
            raise SeriesError(f"series {name!r} ({arm}): index {index!r} must be an integer from 0 to the "
                              f"point's step")
        series = self._get(arm, name)
        if index < series.logged or step <= series.last_step:
            raise SeriesError(f"series {name!r} ({arm}): points out of order at index {index}")
        return self._add(series, index, step, value)

    def _get(self, arm: str, name: str) -> _Series:
        key = (arm, name)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                raise SeriesError(f"a run logs at most {self.max_series} series (arm, name); "
                                  f"{name!r} ({arm}) would be one more")
            series = self._series[key] = _Series()
        return series

    def _add(self, series: _Series, index: int, step: int, value: float) -> bool:
        series.logged = index + 1
        series.last_step = step
        series.last = (index, step, value)
        stride = stride_for(series.logged, self.max_points)
        if stride != series.stride:
            series.stride = stride
            series.points = {i: p for i, p in series.points.items() if i % stride == 0}
        if index % stride == 0:
            series.points[index] = (step, value)
            return True
        return False

    def series(self) -> list[dict[str, Any]]:
        """``[{arm, name, steps, values, logged}]``, sorted by arm then name; each has at most
        ``max_points`` points, the last one logged included."""
        out = []
        for (arm, name), series in sorted(self._series.items()):
            points = dict(series.points)
            if series.last is not None:
                index, step, value = series.last
                points[index] = (step, value)
            ordered = [points[i] for i in sorted(points)]
            out.append({
                "arm": arm, "name": name, "steps": [s for s, _ in ordered], "values": [v for _, v in ordered],
                "logged": series.logged,
            })
        return out

    def kept_points(self) -> list[tuple[str, str, list[list[Any]]]]:
        """``(arm, name, [[index, step, value], ...])`` of what is kept now, the last point included."""
        out = []
        for (arm, name), series in sorted(self._series.items()):
            points = {i: [i, step, value] for i, (step, value) in series.points.items()}
            if series.last is not None:
                points[series.last[0]] = list(series.last)
            out.append((arm, name, [points[i] for i in sorted(points)]))
        return out

    def pending_last(self) -> list[tuple[str, str, tuple[int, int, float]]]:
        """Each series' last point: a writer that passed on only kept points adds these at the end."""
        return [(arm, name, s.last) for (arm, name), s in sorted(self._series.items()) if s.last is not None]
