"""The experiment plugin SDK: the whole interface a plugin codes against.

A plugin is a subclass of :class:`Experiment` registered under the entry-point group
``interp_registry.experiments``. It never touches Django: the registry hands it validated
parameters and a :class:`RunContext`, and stores what ``run`` returns.

This module needs only pydantic; torch (and numpy, pillow) are imported by the helpers that use
them (``seed_everything``, ``png_bytes``, ``LocalContext``, ``run_locally``): install
``interp-registry[torch]``. ``interp_registry.testing`` holds the contract checks the registry's
workers apply to what ``run`` returns.
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from interp_registry.series import SeriesError as SeriesError  # noqa: F401 - re-exported
from interp_registry.series import SeriesRecorder

API_VERSION = "1.0"
#: The largest ``Experiment.recommended_seeds`` a plugin may declare.
MAX_RECOMMENDED_SEEDS = 50
ENTRY_POINT_GROUP = "interp_registry.experiments"

BASELINE = "baseline"
INTERVENTION = "intervention"


class Axis(StrEnum):
    SAFETY = "safety"
    CAPABILITY = "capability"
    DIAGNOSTIC = "diagnostic"


class Scale(StrEnum):
    """How a metric's values compare between arms (the registry computes effects on this footing).

    ``RATIO``: strictly positive (energies, losses, MSE, FVU, step counts); compared as log-ratios,
    so a relative change never passes -100%. ``PROPORTION``: bounded in [0, 1] (accuracies,
    fractions, cosine similarities, attention scores); compared as differences in points.
    ``DIFFERENCE``: unbounded (counts that can be 0, differences, log-likelihoods); compared as
    plain differences, never relatively.
    """

    RATIO = "ratio"
    PROPORTION = "proportion"
    DIFFERENCE = "difference"


@dataclass(frozen=True)
class Metric:
    """A quantity a plugin emits for every arm.

    ``scale`` says which values are possible and how arms are compared (see :class:`Scale`); the
    registry refuses values outside it. ``time_to_event`` marks a time to an event (steps, epochs):
    a run may return :class:`NotReached` for it, and it must be on the ratio scale.
    """

    name: str
    axis: Axis
    higher_is_better: bool
    unit: str = ""
    description: str = ""
    version: int = 1  # bump when the definition changes: results are never pooled across versions
    scale: Scale = Scale.DIFFERENCE
    time_to_event: bool = False

    def __post_init__(self) -> None:
        # "ratio" works like Scale.RATIO; anything else is left for discovery to report.
        if not isinstance(self.scale, Scale) and self.scale in tuple(Scale):
            object.__setattr__(self, "scale", Scale(self.scale))


@dataclass(frozen=True)
class NotReached:
    """The event did not happen within the budget (only for ``time_to_event`` metrics).

    Stored censored at the budget: the event time is known only to exceed ``budget``, and the
    registry never averages it as if it were a value.
    """

    budget: float


@dataclass(frozen=True)
class Resources:
    device: str = "cpu"  # "cpu" or "gpu": which queue the runs go to
    time_limit_s: int = 600


class Params(BaseModel):
    """Base for plugin parameter models: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RunContext(Protocol):
    seed: int
    device: Any  # torch.device
    deterministic: bool

    def progress(self, fraction: float, message: str = "") -> None: ...

    def log(self, message: str) -> None: ...

    def save_artifact(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def log_series(self, name: str, step: int, value: float, *, arm: str) -> None:
        """One point of a training curve of ``arm`` (see :mod:`interp_registry.series` for the
        bounds: 32 series, 10,000 points each, thinned beyond; a non-finite value raises)."""
        ...

    def save_checkpoint(self, name: str, data: bytes) -> None:
        """A checkpoint: an artifact of type ``application/x-checkpoint`` (CHECKPOINT_CONTENT_TYPE)
        within the checkpoint size limit (the registry's RUN_MAX_CHECKPOINT_BYTES)."""
        ...

    def should_stop(self) -> bool: ...


#: The content type of ``ctx.save_checkpoint``'s artifacts.
CHECKPOINT_CONTENT_TYPE = "application/x-checkpoint"
#: The largest checkpoint ``LocalContext`` accepts (a registry worker: RUN_MAX_CHECKPOINT_BYTES).
MAX_CHECKPOINT_BYTES = 50 * 1024 * 1024


class StopRequested(Exception):
    """Raised by a plugin (or ``check_stop``) when ``ctx.should_stop()`` says the run was cancelled."""


class Experiment:
    """Base class of every experiment plugin. Keep subclasses to these few members.

    ``run`` returns ``{arm: {metric: value}}`` for both arms and every declared metric; a value is
    a float within the metric's scale, or :class:`NotReached` for a time-to-event metric. Arms are
    exactly ``("baseline", "intervention")``. The registry, not the plugin, chooses how intervals
    and verdicts are computed.

    **Seeds in parallel (optional).** A plugin whose seeds can be trained as one batched model
    (stacked parameters with a leading seed dimension, ``torch.func.vmap``) sets ``batched_seeds =
    True`` and overrides :meth:`run_seeds`. ``run_seeds(params, ctxs)`` gets one context per seed
    (its ``seed``, its own artifacts, logs, progress and curves; every context has the same
    ``device`` and ``deterministic``) and returns one result per context, in order, each exactly
    what ``run(params, ctx)`` returns for that seed: the same arms and metrics, and the same
    numbers within ``batched_seeds_tolerance``, i.e. ``|batched - alone| <= tolerance * max(1,
    |alone|)`` for every value (``NotReached`` must match ``NotReached`` with the same budget). It
    must therefore seed each seed's randomness itself (``torch.Generator(...).manual_seed(seed)``
    per seed, drawing in the order ``run`` draws from the global generators), never from the global
    state that one seed's ``seed_everything`` sets. Bit-identical numbers are the aim on the CPU;
    a batched kernel may sum in another order than the one-seed kernel (cuBLAS picks kernels by
    batch size), which is what a tolerance above 0 admits: state the tolerance you measured. A
    stop request on any context may stop the whole batch (``StopRequested``). The default
    ``run_seeds`` runs the seeds one after another; :func:`run_seeds_locally` runs either way and
    ``interp_registry.testing.batched_seeds_errors`` checks the agreement.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    api_version: ClassVar[str] = API_VERSION
    Params: ClassVar[type[BaseModel]] = Params
    metrics: ClassVar[tuple[Metric, ...]] = ()
    arms: ClassVar[tuple[str, ...]] = (BASELINE, INTERVENTION)
    resources: ClassVar[Resources] = Resources()
    # Named parameter sets, e.g. {"tiny": {...}, "gpu": {...}}: "tiny" is used by tests.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Seeds per reproduction this plugin needs for a meaningful interval (an int from 1 to
    # MAX_RECOMMENDED_SEEDS): a new experiment's default when it gives none; None: the registry's 3.
    recommended_seeds: ClassVar[int | None] = None
    # Opt-in: ``run_seeds`` trains several seeds as one batched model (see the class docstring).
    batched_seeds: ClassVar[bool] = False
    # How far a batched seed's values may stray from ``run``'s for that seed, relative to
    # max(1, |value|); 0.0 means identical numbers.
    batched_seeds_tolerance: ClassVar[float] = 0.0

    def run(self, params: BaseModel, ctx: RunContext) -> dict[str, dict[str, float | NotReached]]:
        raise NotImplementedError

    def run_seeds(
        self, params: BaseModel, ctxs: Sequence[RunContext]
    ) -> list[dict[str, dict[str, float | NotReached]]]:
        """One result per context, in order, each what ``run(params, ctx)`` returns for its seed.

        This default runs the seeds one after another (``seed_everything`` then ``run``); a plugin
        with ``batched_seeds = True`` overrides it to train them as one batched model.
        """
        results = []
        for ctx in ctxs:
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            results.append(self.run(params, ctx))
        return results

    @classmethod
    def metric(cls, name: str) -> Metric:
        for metric in cls.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        return cls.Params.model_json_schema()


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def check_stop(ctx: RunContext) -> None:
    if ctx.should_stop():
        raise StopRequested("the run was cancelled")


def png_bytes(image: Any) -> bytes:
    """Encode an HxW or HxWx3 float array/tensor in [0, 1] as PNG bytes."""
    import numpy as np
    from PIL import Image

    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    array = (np.clip(array, 0.0, 1.0) * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class LocalContext:
    """A context for running a plugin outside the registry (tests, notebooks, plugin authors)."""

    seed: int = 0
    device: Any = None
    deterministic: bool = False
    artifacts: dict[str, bytes] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    progress_log: list[tuple[float, str]] = field(default_factory=list)
    stop: bool = False
    #: the experiment's arms: ``log_series`` refuses any other (None: any arm)
    arms: tuple[str, ...] | None = None
    max_checkpoint_bytes: int = MAX_CHECKPOINT_BYTES
    content_types: dict[str, str] = field(default_factory=dict)
    recorder: SeriesRecorder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.recorder = SeriesRecorder(arms=self.arms)
        if self.device is None:
            import torch

            self.device = torch.device("cpu")

    def progress(self, fraction: float, message: str = "") -> None:
        self.progress_log.append((float(fraction), message))

    def log(self, message: str) -> None:
        logging.getLogger("plugins").info(message)
        self.logs.append(message)

    def save_artifact(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.artifacts[name] = data
        self.content_types[name] = content_type

    def log_series(self, name: str, step: int, value: float, *, arm: str) -> None:
        self.recorder.log(name, step, value, arm=arm)

    def save_checkpoint(self, name: str, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("save_checkpoint needs bytes")
        if len(data) > self.max_checkpoint_bytes:
            raise ValueError(f"checkpoint {name!r} is {len(data)} bytes; "
                             f"the limit is {self.max_checkpoint_bytes} bytes")
        self.save_artifact(name, bytes(data), CHECKPOINT_CONTENT_TYPE)

    @property
    def series(self) -> list[dict[str, Any]]:
        """The curves logged so far: ``[{arm, name, steps, values, logged}]`` (thinned as the registry does)."""
        return self.recorder.series()

    def should_stop(self) -> bool:
        return self.stop


def _local_params(experiment: type[Experiment], params: dict[str, Any] | None, preset: str | None) -> BaseModel:
    if preset is not None and preset not in experiment.presets:
        raise KeyError(f"{experiment.__name__} has no preset {preset!r} (it has {sorted(experiment.presets)})")
    merged = dict(experiment.presets.get(preset, {})) if preset else {}
    merged.update(params or {})
    return experiment.Params.model_validate(merged)


def run_locally(
    experiment: type[Experiment],
    params: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    validate: bool = True,
) -> tuple[dict[str, dict[str, float | NotReached]], LocalContext]:
    """Validate ``params`` (optionally on top of a preset) and run one seed in-process.

    With ``validate`` (the default) the result is checked as a registry worker checks it (every
    declared metric for every arm, finite, within its scale; see :mod:`interp_registry.testing`):
    a missing metric or a NaN raises :class:`interp_registry.testing.ContractError` here, not after
    a full run on the registry. The curves the plugin logged are ``ctx.series``.
    """
    import torch

    validated = _local_params(experiment, params, preset)
    ctx = LocalContext(seed=seed, device=torch.device(device), arms=tuple(experiment.arms))
    seed_everything(seed)
    result = experiment().run(validated, ctx)
    if validate:
        from interp_registry.testing import validate_results

        validate_results(experiment, result)
    return result, ctx


def run_seeds_locally(
    experiment: type[Experiment],
    params: dict[str, Any] | None = None,
    *,
    seeds: Sequence[int],
    preset: str | None = None,
    device: str = "cpu",
    batched: bool | None = None,
    validate: bool = True,
) -> list[tuple[dict[str, dict[str, float | NotReached]], LocalContext]]:
    """Run several seeds in-process: ``[(results, ctx)]``, one per seed, in order.

    ``batched`` None (the default) trains them as one batched model when the plugin opts in
    (``batched_seeds = True``: its ``run_seeds``), else one after another exactly as
    :func:`run_locally` runs each; True requires the opt-in; False always runs them one after
    another. With ``validate`` every seed's result is checked as :func:`run_locally` checks it.
    """
    import torch

    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("run_seeds_locally needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, not {seeds}")
    use_batch = experiment.batched_seeds if batched is None else batched
    if use_batch and not experiment.batched_seeds:
        raise ValueError(f"{experiment.__name__} does not train seeds in parallel (batched_seeds is False)")
    validated = _local_params(experiment, params, preset)
    ctxs = [LocalContext(seed=seed, device=torch.device(device), arms=tuple(experiment.arms)) for seed in seeds]
    if use_batch:
        seed_everything(seeds[0])  # the global state as a one-seed run starts; the plugin seeds each seed itself
        results = experiment().run_seeds(validated, ctxs)
    else:
        results = Experiment.run_seeds(experiment(), validated, ctxs)
    if not isinstance(results, list | tuple) or len(results) != len(ctxs):
        from interp_registry.testing import ContractError

        count = len(results) if isinstance(results, list | tuple) else type(results).__name__
        raise ContractError(f"run_seeds() must return one result per seed ({len(ctxs)}), not {count}")
    if validate:
        from interp_registry.testing import validate_results

        for result in results:
            validate_results(experiment, result)
    return list(zip(results, ctxs, strict=True))
