"""A Python client of the registry's API (``/api/v1/``), on httpx.

    from interp_registry.client import Registry

    reg = Registry("http://127.0.0.1:8000", token="ifr_...")      # token=None: read-only
    finding = reg.create_finding(title="...", kind="fix", tags=["vision"])
    reg.create_claim(finding.id, metric="checkerboard_energy", direction="decrease", min_relative_effect=0.9)
    experiment = reg.create_experiment(finding.id, plugin="checkerboard", params={"steps": 300}, reproduce=False)
    reproduction = reg.reproduce(experiment.id, n_seeds=3)
    reg.wait(reproduction)                                       # live stream, else polling; tqdm bar
    reg.effects(finding.id).to_frame()                           # pandas (pip install interp-registry[pandas])

Every list is followed through its pages. A 4xx/5xx answer raises a :class:`RegistryError`
subclass carrying the status, the server's ``detail`` and its per-field ``errors``. Every create
sends an ``Idempotency-Key`` (a fresh UUID unless one is given), so a retried request never
creates twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from interp_registry import __version__

__all__ = [
    "BadRequest",
    "Claim",
    "Conflict",
    "Effects",
    "Experiment",
    "Finding",
    "Forbidden",
    "NotFound",
    "Plugin",
    "RateLimited",
    "Registry",
    "RegistryError",
    "Reproduction",
    "Run",
    "ServerError",
    "Subscription",
    "Unauthorized",
    "Unprocessable",
]

TERMINAL_RUN_STATES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


# ---------------------------------------------------------------- errors


class RegistryError(Exception):
    """An answer of 400 or above: ``status``, the server's ``detail`` and ``errors`` ({field: [messages]})."""

    def __init__(self, status: int, detail: str, errors: dict[str, list[str]] | None = None, *,
                 method: str = "", url: str = "", body: Any = None, headers: httpx.Headers | None = None):
        self.status = status
        self.detail = detail
        self.errors = errors or {}
        self.method = method
        self.url = url
        self.body = body
        self.headers = headers or httpx.Headers()
        fields = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in self.errors.items())
        super().__init__(f"{status} {method} {url}: {detail}" + (f" [{fields}]" if fields else ""))


class BadRequest(RegistryError):
    """400: bad input; ``errors`` names each field."""


class Unauthorized(RegistryError):
    """401: no token, or an expired or revoked one."""


class Forbidden(RegistryError):
    """403: signed in, but not allowed (not an author of the finding, say)."""


class NotFound(RegistryError):
    """404: no such object, or one the caller may not see."""


class Conflict(RegistryError):
    """409: e.g. a retry while the first request with the same Idempotency-Key still runs."""


class Unprocessable(RegistryError):
    """422: e.g. an Idempotency-Key reused with another body."""


class RateLimited(RegistryError):
    """429: a quota or throttle; ``retry_after`` in seconds when the server said."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("Retry-After")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ServerError(RegistryError):
    """5xx."""


_ERRORS: dict[int, type[RegistryError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: Unprocessable,
    429: RateLimited,
}


# ---------------------------------------------------------------- typed results


class _Model(BaseModel):
    """A resource as the server sent it: the typed fields below, and any other under its own name."""

    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Claim(_Model):
    id: int
    finding: int
    metric: str
    direction: str
    min_relative_effect: float | None = None
    margin: float | None = None
    threshold_unit: str = "relative"
    statement: str = ""
    version: int = 1
    is_current: bool = True
    verdict: str | None = None


class ExperimentBrief(_Model):
    id: int
    plugin: str
    label: str = ""
    params: dict[str, Any] = {}
    default_seeds: int = 3
    device: str = "cpu"
    retracted_at: str | None = None


class Finding(_Model):
    id: int
    url: str = ""
    title: str
    summary: str = ""
    kind: str
    tags: list[str] = []
    references: list[str] = []
    authors: list[str] = []
    status: str = ""
    builds_on: list[int] = []
    visibility: str = "public"
    claims: list[Claim] = []
    experiments: list[ExperimentBrief] = []


class Experiment(_Model):
    id: int
    finding: int
    plugin: str
    label: str = ""
    params: dict[str, Any] = {}
    default_seeds: int = 3
    device: str = "cpu"
    reproductions: list[int] = []
    retracted_at: str | None = None


class RunBrief(_Model):
    id: int
    seed: int
    state: str
    progress: float = 0.0
    progress_message: str = ""
    error: str = ""


class Reproduction(_Model):
    id: int
    experiment: int
    finding: int
    plugin: str
    seeds: list[int] = []
    device: str = "cpu"
    state: str
    outcome: str | None = None  # once finished: succeeded, failed or cancelled (None from older servers)
    runs: list[RunBrief] = []

    @property
    def finished(self) -> bool:
        return bool(self.runs) and all(run.state in TERMINAL_RUN_STATES for run in self.runs)


class Run(_Model):
    id: int
    reproduction: int
    experiment: int
    finding: int
    plugin: str
    seed: int
    state: str
    progress: float = 0.0
    plugin_version: str = ""
    measurements: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    error: str = ""


class Plugin(_Model):
    name: str
    available: bool
    error: str | None = None
    version: str | None = None
    description: str = ""
    params_schema: dict[str, Any] = {}
    metrics: list[dict[str, Any]] = []
    presets: dict[str, Any] = {}


class Subscription(_Model):
    id: int
    name: str = ""
    channel: str = ""
    url: str = ""
    active: bool = True
    secret: str | None = None


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("DataFrames need pandas: pip install 'interp-registry[pandas]'") from None
    return pandas


class Effects(_Model):
    """A finding's effects (``GET /findings/{id}/effects/``): ``claims``, ``axis_scores``, ``pending``..."""

    finding: int
    status: str = ""
    pending: bool = False
    n_runs: int = 0
    claims: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    axis_scores: dict[str, Any] = {}

    def claim_rows(self) -> list[dict[str, Any]]:
        """One row per claim and experiment: the claim, its verdict and its effect's fields (``effect_*``)."""
        rows = []
        for claim in self.claims:
            base = {key: claim.get(key) for key in (
                "claim", "metric", "direction", "min_relative_effect", "margin", "threshold_unit", "statement",
            )}
            per_experiment = claim.get("experiments") or [None]
            for entry in per_experiment:
                source = entry if entry is not None else claim
                row = {
                    **base,
                    "experiment": source.get("experiment"),
                    "plugin": source.get("plugin"),
                    "verdict": source.get("verdict") if entry is not None else claim.get("verdict"),
                    "claim_verdict": claim.get("verdict"),
                    "evidence": source.get("evidence"),
                    "n_seeds": source.get("n_seeds"),
                    "p_value": source.get("p_value"),
                }
                for key, value in (source.get("effect") or {}).items():
                    if not isinstance(value, dict | list):
                        row[f"effect_{key}"] = value
                rows.append(row)
        return rows

    def to_frame(self) -> Any:
        """:meth:`claim_rows` as a pandas DataFrame."""
        return _pandas().DataFrame(self.claim_rows())


# ---------------------------------------------------------------- the client


def _id(value: Any) -> int:
    """An object's id from the object (a model or dict with ``id``) or the id itself."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, BaseModel):
        return int(value.id)  # type: ignore[attr-defined]
    if isinstance(value, dict) and "id" in value:
        return int(value["id"])
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise TypeError(f"not an id or an object with one: {value!r}")


class Registry:
    """The registry at ``url`` (its root, e.g. ``http://127.0.0.1:8000``); ``token``: an API token
    (``ifr_...``), None to read anonymously."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.api = f"{self.url}/api/v1"
        self.token = token
        headers = {"User-Agent": f"interp-registry/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.url!r}, token={'***' if self.token else None})"

    # ------------------------------------------------------------ transport

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = response.text
        detail = body.get("detail", "") if isinstance(body, dict) else str(body)[:500]
        errors = body.get("errors") if isinstance(body, dict) and isinstance(body.get("errors"), dict) else {}
        errors = {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in errors.items()}
        kind = _ERRORS.get(response.status_code, ServerError if response.status_code >= 500 else RegistryError)
        raise kind(response.status_code, str(detail), errors, method=response.request.method,
                   url=str(response.request.url), body=body, headers=response.headers)

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> Any:
        """One request; the decoded JSON answer (None for 204). ``path`` is under ``/api/v1/`` or absolute."""
        path = self._own(path)
        headers = {}
        if method.upper() == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        params = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._http.request(method, path, json=json_body, params=params or None, headers=headers)
        self._raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _origin(self, url: httpx.URL) -> tuple[str, str, int | None]:
        return (url.scheme, url.host, url.port)

    def _own(self, path: str) -> str:
        """``path`` unless it is an absolute URL of another origin (scheme, host, port) than the
        registry's: the client's headers carry the token, which must never reach another host
        (nor this one in clear text), so such a URL is refused."""
        url = httpx.URL(path)
        if not url.is_absolute_url or self._origin(url) == self._origin(httpx.URL(self.url)):
            return path
        raise ValueError(f"refusing to send a request for {self.url!r} to another origin: {path!r}")

    def _next(self, link: str) -> str:
        """A ``next`` link of the server's, followed on the registry's own origin (its path and
        query only): a link naming another host, or plain HTTP behind a TLS proxy, never receives
        the token."""
        url = httpx.URL(link)
        if not (url.is_absolute_url or link.startswith("/")):
            return link
        return str(httpx.URL(self.url).copy_with(raw_path=url.raw_path))  # raw_path: path and query

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following ``next`` (a bare list is returned whole)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        params.setdefault("page_size", 200)
        data = self.request("GET", path, params=params)
        while True:
            if isinstance(data, list):
                yield from data
                return
            yield from data.get("results", [])
            following = data.get("next")
            if not following:
                return
            data = self.request("GET", self._next(following))

    # ------------------------------------------------------------ findings and claims

    def findings(self, **filters: Any) -> list[Finding]:
        """Findings the caller may read; filters as the API's: kind, status, tag, plugin, q, author,
        axis, visibility, builds_on, ordering."""
        return [Finding.model_validate(item) for item in self.paginate("findings/", filters)]

    def finding(self, finding: int | Finding) -> Finding:
        return Finding.model_validate(self.request("GET", f"findings/{_id(finding)}/"))

    def create_finding(self, *, idempotency_key: str | None = None, **fields: Any) -> Finding:
        """``title``, ``kind`` (theory, fix, ...), ``summary``, ``tags``, ``references``, ``builds_on``..."""
        return Finding.model_validate(self.request("POST", "findings/", json_body=fields,
                                                   idempotency_key=idempotency_key))

    def update_finding(self, finding: int | Finding, **fields: Any) -> Finding:
        return Finding.model_validate(self.request("PATCH", f"findings/{_id(finding)}/", json_body=fields))

    def delete_finding(self, finding: int | Finding) -> None:
        self.request("DELETE", f"findings/{_id(finding)}/")

    def claims(self, finding: int | Finding, *, history: bool = False) -> list[Claim]:
        params = {"history": 1} if history else None
        return [Claim.model_validate(item) for item in self.paginate(f"findings/{_id(finding)}/claims/", params)]

    def claim(self, claim: int | Claim) -> Claim:
        return Claim.model_validate(self.request("GET", f"claims/{_id(claim)}/"))

    def create_claim(self, finding: int | Finding, *, idempotency_key: str | None = None, **fields: Any) -> Claim:
        """``metric``, ``direction`` (increase, decrease, non_inferior...), ``min_relative_effect`` or
        ``margin``, ``threshold_unit``, ``statement``, ``supersedes``."""
        return Claim.model_validate(self.request("POST", f"findings/{_id(finding)}/claims/", json_body=fields,
                                                 idempotency_key=idempotency_key))

    def update_claim(self, claim: int | Claim, **fields: Any) -> Claim:
        return Claim.model_validate(self.request("PATCH", f"claims/{_id(claim)}/", json_body=fields))

    # ------------------------------------------------------------ experiments, reproductions, runs

    def experiments(self, finding: int | Finding | None = None, **filters: Any) -> list[Experiment]:
        if finding is not None:
            items = self.paginate(f"findings/{_id(finding)}/experiments/")
        else:
            items = self.paginate("experiments/", filters)
        return [Experiment.model_validate(item) for item in items]

    def experiment(self, experiment: int | Experiment) -> Experiment:
        return Experiment.model_validate(self.request("GET", f"experiments/{_id(experiment)}/"))

    def create_experiment(self, finding: int | Finding, *, plugin: str, params: dict[str, Any] | None = None,
                          idempotency_key: str | None = None, **fields: Any) -> Experiment:
        """``plugin`` and its ``params`` (validated against its schema); ``label``, ``default_seeds``, ``device``,
        ``time_limit_s``, ``reproduce`` (False: queue nothing yet)."""
        body = {"plugin": plugin, "params": params or {}, **fields}
        return Experiment.model_validate(self.request("POST", f"findings/{_id(finding)}/experiments/",
                                                      json_body=body, idempotency_key=idempotency_key))

    def retract_experiment(self, experiment: int | Experiment, reason: str) -> Experiment:
        return Experiment.model_validate(
            self.request("POST", f"experiments/{_id(experiment)}/retract/", json_body={"reason": reason})
        )

    def reproduce(self, experiment: int | Experiment, *, seeds: list[int] | None = None,
                  n_seeds: int | None = None, device: str | None = None,
                  idempotency_key: str | None = None) -> Reproduction:
        """Queue runs: given ``seeds``, or seeds 0..n_seeds-1, or the experiment's default count."""
        body: dict[str, Any] = {}
        if seeds is not None:
            body["seeds"] = list(seeds)
        if n_seeds is not None:
            body["n_seeds"] = n_seeds
        if device is not None:
            body["device"] = device
        return Reproduction.model_validate(self.request("POST", f"experiments/{_id(experiment)}/reproductions/",
                                                        json_body=body, idempotency_key=idempotency_key))

    def rereproduce(self, finding: int | Finding, *, idempotency_key: str | None = None) -> Any:
        """Reproduce every experiment of a finding again with the installed plugin versions."""
        return self.request("POST", f"findings/{_id(finding)}/rereproduce/", json_body={},
                            idempotency_key=idempotency_key)

    def reproductions(self, **filters: Any) -> list[Reproduction]:
        """Filters: experiment, device, source."""
        return [Reproduction.model_validate(item) for item in self.paginate("reproductions/", filters)]

    def reproduction(self, reproduction: int | Reproduction) -> Reproduction:
        return Reproduction.model_validate(self.request("GET", f"reproductions/{_id(reproduction)}/"))

    def runs(self, **filters: Any) -> list[Run]:
        """Filters: state, reproduction, seed, queue."""
        return [Run.model_validate(item) for item in self.paginate("runs/", filters)]

    def run(self, run: int | Run) -> Run:
        return Run.model_validate(self.request("GET", f"runs/{_id(run)}/"))

    def cancel_run(self, run: int | Run) -> Any:
        return self.request("POST", f"runs/{_id(run)}/cancel/", json_body={})

    def measurements(self, finding: int | Finding, *, as_frame: bool = False) -> Any:
        """Every measurement of a finding's runs: one row per run, arm and metric (with the
        experiment, reproduction, seed and state of the run)."""
        rows = []
        for experiment in self.experiments(finding):
            for reproduction in self.reproductions(experiment=experiment.id):
                for brief in reproduction.runs:
                    if brief.state != "succeeded":
                        continue
                    run = self.run(brief.id)
                    for m in run.measurements:
                        rows.append({
                            "finding": run.finding, "experiment": run.experiment, "plugin": run.plugin,
                            "reproduction": run.reproduction, "run": run.id, "seed": run.seed,
                            "plugin_version": run.plugin_version, "arm": m.get("arm"), "metric": m.get("metric"),
                            "metric_version": m.get("metric_version"), "value": m.get("value"),
                            "censored": m.get("censored"),
                        })
        return _pandas().DataFrame(rows) if as_frame else rows

    def series(self, finding: int | Finding | Run | None = None, *, run: int | Run | None = None,
               name: str | None = None, arm: str | None = None, max_points: int | None = 5000,
               as_frame: bool = False) -> Any:
        """Training curves (``ctx.log_series``), one row per point: ``run``, ``seed``, ``arm``,
        ``name``, ``step``, ``value`` (and ``experiment``, ``state``: a failed run's curve is
        partial). Of a finding's runs (``/findings/{id}/series/``, each curve thinned to
        ``max_points`` by min/max bucketing; the server allows 2 to 5,000), or of one run (a
        :class:`Run`, or ``run=``: every stored point). ``name``/``arm`` filter. ``as_frame``: a
        pandas DataFrame with those columns."""
        params = {k: v for k, v in {"name": name, "arm": arm}.items() if v is not None}
        rows: list[dict[str, Any]] = []
        if isinstance(finding, Run) and run is None:
            finding, run = None, finding
        if run is not None:
            data = self.request("GET", f"runs/{_id(run)}/series/", params=params)
            curves = [{**curve, "run": data["run"], "seed": data["seed"], "state": data["state"]}
                      for curve in data["series"]]
        elif finding is not None:
            if max_points is not None:
                params["max_points"] = max_points
            curves = self.request("GET", f"findings/{_id(finding)}/series/", params=params)["series"]
        else:
            raise TypeError("series() needs a finding or a run")
        for curve in curves:
            for step, value in zip(curve["steps"], curve["values"], strict=True):
                rows.append({"run": curve["run"], "seed": curve["seed"], "arm": curve["arm"], "name": curve["name"],
                             "step": step, "value": value, "experiment": curve.get("experiment"),
                             "state": curve.get("state")})
        if as_frame:
            return _pandas().DataFrame(
                rows, columns=["run", "seed", "arm", "name", "step", "value", "experiment", "state"])
        return rows

    # ------------------------------------------------------------ effects, landscape, plugins

    def effects(self, finding: int | Finding, *, as_frame: bool = False, detail: bool = False) -> Any:
        """A finding's effects (:class:`Effects`), or with ``as_frame`` its claim table as a DataFrame.
        ``detail``: with run ids and per-reproduction effects (``?detail=runs``, where the server has it)."""
        params = {"detail": "runs"} if detail else None
        effects = Effects.model_validate(self.request("GET", f"findings/{_id(finding)}/effects/", params=params))
        return effects.to_frame() if as_frame else effects

    def landscape(self, *, as_frame: bool = False, **filters: Any) -> Any:
        """Safety against capability for every finding (filters: tag, kind, plugin): the server's
        answer with every page of points gathered under ``findings`` (older servers: ``points``);
        with ``as_frame`` the points as a DataFrame (``safety_score``, ``capability_score``)."""
        data = self.request("GET", "landscape/", params=filters)
        points_key = "findings" if isinstance(data.get("findings"), list) else "points"
        points = list(data.get(points_key) or [])
        following = (data.get("page_info") or {}).get("next")
        while following:
            page = self.request("GET", self._next(following))
            points += page.get(points_key) or []
            following = (page.get("page_info") or {}).get("next")
        data[points_key] = points
        if not as_frame:
            return data
        rows = []
        for point in points:
            row = {k: v for k, v in point.items() if not isinstance(v, dict | list)}
            for axis in ("safety", "capability"):
                row[f"{axis}_score"] = (point.get(axis) or {}).get("score")
            row["tags"] = ",".join(point.get("tags", []))
            rows.append(row)
        return _pandas().DataFrame(rows)

    @staticmethod
    def landscape_points(data: dict[str, Any]) -> list[dict[str, Any]]:
        """The points of a :meth:`landscape` answer, whichever key the server used."""
        return list(data.get("findings") if isinstance(data.get("findings"), list) else data.get("points") or [])

    def plugins(self) -> list[Plugin]:
        return [Plugin.model_validate(item) for item in self.request("GET", "plugins/")]

    def plugin(self, name: str) -> Plugin:
        return Plugin.model_validate(self.request("GET", f"plugins/{name}/"))

    def metrics(self, **filters: Any) -> list[dict[str, Any]]:
        return self.request("GET", "metrics/", params=filters)

    # ------------------------------------------------------------ subscriptions and events

    def subscriptions(self) -> list[Subscription]:
        return [Subscription.model_validate(item) for item in self.paginate("subscriptions/")]

    def create_subscription(self, *, idempotency_key: str | None = None, **fields: Any) -> Subscription:
        """``name``, ``channel`` (``webhook``), ``url``, filters ``finding``, ``tag``, ``plugin``,
        ``event_types``. The answer carries the signing ``secret`` once."""
        return Subscription.model_validate(self.request("POST", "subscriptions/", json_body=fields,
                                                        idempotency_key=idempotency_key))

    def delete_subscription(self, subscription: int | Subscription) -> None:
        self.request("DELETE", f"subscriptions/{_id(subscription)}/")

    def events(self, *, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """One page of the event log after the cursor ``after``: ``{"events": [...], "next": cursor}``."""
        return self.request("GET", "events/", params={"after": after, "limit": limit})

    def stream(self, *, after: int | None = None, timeout: float = 300.0) -> Iterator[dict[str, Any]]:
        """Events from the live stream (Server-Sent Events) as they happen, ``after`` a cursor or from now;
        ends when the server closes it (``timeout`` seconds). Besides the events it yields
        ``{"type": "open"}`` once connected and ``{"type": "keepalive"}`` for each keep-alive."""
        params: dict[str, Any] = {"timeout": max(1, int(timeout))}
        if after is not None:
            params["after"] = after
        read_timeout = 30.0  # the server sends a keep-alive every 15 s
        with self._http.stream("GET", "events/stream", params=params,
                               timeout=httpx.Timeout(10.0, read=read_timeout)) as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for(response)
            yield {"type": "open"}  # the stream is open: what happens from now on reaches it
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line == "" and data:
                    try:
                        yield json.loads("\n".join(data))
                    except ValueError:
                        pass
                    data = []
                elif line.startswith(":"):
                    yield {"type": "keepalive"}

    # ------------------------------------------------------------ waiting

    def wait(self, reproduction: int | Reproduction, *, timeout: float = 3600.0, progress: bool | None = None,
             per_run: bool = False, effects: bool = True, poll_interval: float = 2.0,
             stream: bool = True) -> Reproduction:
        """Wait until every run of ``reproduction`` is terminal and (with ``effects``) the finding's
        effects are no longer pending; returns the finished reproduction.

        Follows the live event stream, re-reading the reproduction on each of its finding's events
        (and keep-alive); when the stream cannot be had (an old server, a proxy that buffers) it polls
        every ``poll_interval`` seconds. ``progress``: tqdm bars (``tqdm.auto``: widgets in a
        notebook), one for the reproduction (runs done) or with ``per_run`` one per run (its own
        progress and message); None shows them only on a terminal. Raises TimeoutError after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        current = self.reproduction(reproduction)
        bars = _ProgressBars(current, progress, per_run)
        try:
            current = self._wait_runs(current, deadline, bars, poll_interval, stream)
            if effects:
                while self.effects(current.finding).pending:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"effects of finding {current.finding} still pending after {timeout} s")
                    time.sleep(min(poll_interval, 0.5))
        finally:
            bars.close()
        return current

    def _wait_runs(self, current: Reproduction, deadline: float, bars: _ProgressBars, poll_interval: float,
                   use_stream: bool) -> Reproduction:
        def update() -> Reproduction:
            fresh = self.reproduction(current.id)
            bars.update(fresh)
            return fresh

        current = update()
        while not current.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"reproduction {current.id} not finished")
            if use_stream:
                try:
                    # The stream starts "from now": re-read once it is open, so nothing is missed.
                    for event in self.stream(timeout=min(remaining, 300)):
                        if event.get("type") in ("open", "keepalive") or event.get("finding") == current.finding:
                            current = update()
                        if current.finished or time.monotonic() > deadline:
                            break
                    continue
                except (httpx.HTTPError, RegistryError):
                    use_stream = False  # fall back to polling
            time.sleep(min(poll_interval, max(0.0, remaining)))
            current = update()
        return current


class _ProgressBars:
    """tqdm bars for :meth:`Registry.wait`: one for the reproduction, or one per run."""

    def __init__(self, reproduction: Reproduction, progress: bool | None, per_run: bool):
        import sys

        if progress is None:
            progress = sys.stderr.isatty()
        self.bars: dict[int | None, Any] = {}
        if not progress:
            return
        from tqdm.auto import tqdm

        if per_run:
            for position, run in enumerate(reproduction.runs):
                self.bars[run.id] = tqdm(
                    total=100, position=position, leave=True, desc=f"run {run.id} (seed {run.seed})",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}] {postfix}",
                )
        else:
            self.bars[None] = tqdm(
                total=len(reproduction.runs), desc=f"reproduction {reproduction.id} ({reproduction.plugin})",
                unit="run", bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}] {postfix}",
            )

    def update(self, reproduction: Reproduction) -> None:
        if not self.bars:
            return
        if None in self.bars:
            bar = self.bars[None]
            done = sum(run.state in TERMINAL_RUN_STATES for run in reproduction.runs)
            partial = sum(run.progress for run in reproduction.runs if run.state not in TERMINAL_RUN_STATES)
            bar.n = round(done + partial, 2)
            states: dict[str, int] = {}
            for run in reproduction.runs:
                states[run.state] = states.get(run.state, 0) + 1
            bar.set_postfix_str(", ".join(f"{n} {state}" for state, n in sorted(states.items())), refresh=False)
            bar.refresh()
            return
        for run in reproduction.runs:
            bar = self.bars.get(run.id)
            if bar is None:
                continue
            bar.n = 100 if run.state == "succeeded" else round(100 * min(max(run.progress, 0.0), 1.0))
            message = run.progress_message if run.state == "running" else run.state
            bar.set_postfix_str(f"{run.state}: {message}"[:60] if message != run.state else run.state, refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
