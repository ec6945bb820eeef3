"""Seeds in parallel: the SDK's opt-in (``batched_seeds`` / ``run_seeds``), ``run_seeds_locally``
and the contract check that a batched seed gives what ``run`` gives for it alone."""

import math

import pytest
import torch
from interp_registry.sdk import (
    Axis,
    Experiment,
    LocalContext,
    Metric,
    NotReached,
    Params,
    Scale,
    run_locally,
    run_seeds_locally,
)
from interp_registry.testing import (
    ContractError,
    assert_contract,
    batched_seeds_errors,
    check_plugin,
    declaration_errors,
)
from pydantic import Field

from tests.fakes.plugins import EchoExperiment


class NoiseParams(Params):
    samples: int = Field(64, ge=1)


def _result(draws: torch.Tensor) -> dict[str, dict[str, float]]:
    mean = float(draws.mean())
    return {"baseline": {"level": mean}, "intervention": {"level": mean + 0.25}}


class NoisyMean(Experiment):
    """The mean of seeded uniform draws: seeds batched as one (S, samples) draw, one generator per seed."""

    name = "noisy_mean"
    version = "1.0.0"
    Params = NoiseParams
    metrics = (Metric("level", Axis.DIAGNOSTIC, higher_is_better=True, scale=Scale.RATIO),)
    presets = {"tiny": {}}
    batched_seeds = True

    def run(self, params, ctx):
        draws = torch.rand(params.samples)  # the global generator, seeded by seed_everything
        ctx.progress(1.0, "done")
        return _result(draws)

    def _draws(self, params, ctxs) -> torch.Tensor:
        draws = torch.empty(len(ctxs), params.samples)
        for row, ctx in zip(draws, ctxs, strict=True):
            row.uniform_(generator=torch.Generator().manual_seed(ctx.seed))
        return draws

    def run_seeds(self, params, ctxs):
        draws = self._draws(params, ctxs)
        for ctx in ctxs:
            ctx.log("batched")
            ctx.progress(1.0, "done")
        return [_result(row) for row in draws]


class SharedStream(NoisyMean):
    """The classic bug: every seed of the batch drawn from one stream, seeded with the first seed."""

    def _draws(self, params, ctxs) -> torch.Tensor:
        return torch.rand(len(ctxs), params.samples, generator=torch.Generator().manual_seed(ctxs[0].seed))


class Rounding(NoisyMean):
    """Batched values off by 1e-7 (another summation order): within a stated tolerance of 1e-6."""

    batched_seeds_tolerance = 1e-6

    def run_seeds(self, params, ctxs):
        results = super().run_seeds(params, ctxs)
        for result in results:
            result["baseline"]["level"] += 1e-7
        return results


class Exact(Rounding):
    """The same 1e-7 off, claiming identical numbers."""

    batched_seeds_tolerance = 0.0


class Miscounted(NoisyMean):
    """Returns one result fewer than it got seeds."""

    def run_seeds(self, params, ctxs):
        return super().run_seeds(params, ctxs)[:-1]


class NanOnOneSeed(NoisyMean):
    """The second seed's result is NaN."""

    def run_seeds(self, params, ctxs):
        results = super().run_seeds(params, ctxs)
        results[1]["baseline"]["level"] = math.nan
        return results


class Censored(Experiment):
    """A time to an event, never reached alone but 'reached' when batched."""

    name = "censored"
    version = "1.0.0"
    Params = NoiseParams
    metrics = (Metric("steps", Axis.DIAGNOSTIC, higher_is_better=False, scale=Scale.RATIO, time_to_event=True),)
    presets = {"tiny": {}}
    batched_seeds = True

    def run(self, params, ctx):
        ctx.progress(1.0)
        return {"baseline": {"steps": NotReached(100.0)}, "intervention": {"steps": NotReached(100.0)}}

    def run_seeds(self, params, ctxs):
        results = [self.run(params, ctx) for ctx in ctxs]
        results[0]["intervention"]["steps"] = 100.0
        return results


def test_a_batched_plugin_matching_each_seed_alone_passes_the_contract():
    assert declaration_errors(NoisyMean) == []
    assert batched_seeds_errors(NoisyMean, seeds=(0, 1, 2)) == []
    assert_contract(NoisyMean)
    assert batched_seeds_errors(EchoExperiment) == []  # no opt-in: nothing to check


def test_seeds_sharing_one_stream_are_caught():
    problems = batched_seeds_errors(SharedStream, seeds=(3, 4))
    assert len(problems) == 2, problems  # seed 3 draws first from its own stream: only seed 4 is off
    assert all(p.startswith("seed 4, arm ") and "beyond batched_seeds_tolerance 0" in p for p in problems)
    assert any("seed 4, arm 'baseline'" in p for p in check_plugin(SharedStream, seed=3))


def test_the_plugins_stated_tolerance_decides():
    assert batched_seeds_errors(Rounding) == []
    problems = batched_seeds_errors(Exact, seeds=(0,))
    assert problems and "seed 0, arm 'baseline', metric 'level'" in problems[0]


def test_censoring_must_agree():
    (problem,) = batched_seeds_errors(Censored, seeds=(0,))
    assert "seed 0, arm 'intervention', metric 'steps': run_seeds() gave 100.0" in problem
    assert "NotReached(budget=100.0)" in problem


def test_a_wrong_count_or_an_invalid_seed_result_is_reported():
    with pytest.raises(ContractError, match=r"one result per seed \(3\), not 2"):
        run_seeds_locally(Miscounted, preset="tiny", seeds=[0, 1, 2])
    assert "one result per seed" in batched_seeds_errors(Miscounted)[0]
    with pytest.raises(ContractError, match="not finite"):
        run_seeds_locally(NanOnOneSeed, seeds=[0, 1])
    (problem,) = batched_seeds_errors(NanOnOneSeed, seeds=(0, 1))
    assert problem.startswith("run_seeds(), seed 1: metric 'level' of arm 'baseline' is not finite")


def test_declaration_of_the_opt_in():
    class NoOverride(EchoExperiment):
        """Opts in without a batched run_seeds."""

        batched_seeds = True

    class BadTolerance(NoisyMean):
        """A negative tolerance."""

        batched_seeds_tolerance = -1.0

    class NotABool(NoisyMean):
        """batched_seeds is not a bool."""

        batched_seeds = "yes"

    assert declaration_errors(NoOverride) == ["declares batched_seeds = True but does not override run_seeds"]
    assert declaration_errors(BadTolerance) == ["batched_seeds_tolerance must be a finite number >= 0, not -1.0"]
    assert declaration_errors(NotABool) == ["batched_seeds must be True or False, not 'yes'"]
    assert declaration_errors(EchoExperiment) == []


def test_run_seeds_locally_uses_the_batched_path_only_on_opt_in():
    batched = run_seeds_locally(NoisyMean, seeds=[5, 6])
    assert [ctx.seed for _, ctx in batched] == [5, 6]
    assert all(ctx.logs == ["batched"] for _, ctx in batched)
    one_by_one = run_seeds_locally(NoisyMean, seeds=[5, 6], batched=False)
    assert all(ctx.logs == [] for _, ctx in one_by_one)
    assert [r for r, _ in batched] == [r for r, _ in one_by_one]
    assert [r for r, _ in batched] == [run_locally(NoisyMean, seed=seed)[0] for seed in (5, 6)]
    with pytest.raises(ValueError, match="does not train seeds in parallel"):
        run_seeds_locally(EchoExperiment, seeds=[0], batched=True)
    with pytest.raises(ValueError, match="distinct"):
        run_seeds_locally(NoisyMean, seeds=[1, 1])
    with pytest.raises(KeyError, match="no preset 'huge'"):
        run_seeds_locally(NoisyMean, seeds=[0], preset="huge")


def test_the_default_run_seeds_runs_each_seed_as_run_locally_does():
    pairs = run_seeds_locally(EchoExperiment, {"baseline": 3.0, "effect": -1.0, "noise": 0.5}, seeds=[0, 4, 9])
    for seed, (results, ctx) in zip((0, 4, 9), pairs, strict=True):
        alone, alone_ctx = run_locally(EchoExperiment, {"baseline": 3.0, "effect": -1.0, "noise": 0.5}, seed=seed)
        assert results == alone and ctx.seed == seed and ctx.logs == alone_ctx.logs
    ctxs = [LocalContext(seed=2), LocalContext(seed=3)]
    direct = EchoExperiment().run_seeds(EchoExperiment.Params(), ctxs)
    assert direct == [run_locally(EchoExperiment, seed=seed)[0] for seed in (2, 3)]
