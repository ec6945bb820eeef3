"""Template plugin: a logistic probe trained on data where a spurious feature predicts the label
on the training split only. Baseline: no weight decay; intervention: L2 weight decay. Metrics: how
much the probe relies on the spurious feature (safety, lower is better) and its accuracy on a
split where the spurious feature is uninformative (capability, higher is better).

Everything a plugin needs is here: a pydantic ``Params`` model, declared metrics with their axis,
two arms run with the same seed and budget, progress, cancellation, a log line, a training curve
(``ctx.log_series``) and an artifact.
"""

from __future__ import annotations

import json

import torch
from interp_registry.sdk import API_VERSION, Axis, Experiment, Metric, Params, Resources, Scale, check_stop
from pydantic import Field


class ProbeParams(Params):
    samples: int = Field(512, ge=32, le=100_000, description="Training samples.")
    steps: int = Field(200, ge=1, le=100_000, description="Optimisation steps per arm.")
    weight_decay: float = Field(0.1, ge=0.0, le=10.0, description="L2 weight decay of the intervention arm.")
    spurious_strength: float = Field(3.0, ge=0.0, le=10.0, description="Scale of the spurious feature.")


class ProbeDecayExperiment(Experiment):
    """Does L2 weight decay shrink a linear probe's reliance on a spurious feature? Baseline: no
    weight decay; intervention: ``weight_decay``. The registry publishes this docstring as the
    plugin's description (a class docstring is part of the plugin contract)."""

    name = "probe_decay"
    version = "0.1.0"
    api_version = API_VERSION
    Params = ProbeParams
    metrics = (
        Metric("spurious_reliance", Axis.SAFETY, higher_is_better=False, unit="fraction", scale=Scale.PROPORTION,
               description="Share of the probe's weight norm on the spurious feature."),
        Metric("shifted_accuracy", Axis.CAPABILITY, higher_is_better=True, unit="fraction", scale=Scale.PROPORTION,
               description="Accuracy where the spurious feature carries no information."),
    )
    resources = Resources(device="cpu", time_limit_s=60)
    presets = {"tiny": {"samples": 128, "steps": 50}, "gpu": {"samples": 50_000, "steps": 2_000}}

    def run(self, params: ProbeParams, ctx) -> dict[str, dict[str, float]]:
        generator = torch.Generator().manual_seed(ctx.seed)
        labels = torch.randint(0, 2, (params.samples,), generator=generator).float()
        signal = (labels * 2 - 1) + torch.randn(params.samples, generator=generator)
        spurious = (labels * 2 - 1) * params.spurious_strength
        train = torch.stack([signal, spurious], dim=1).to(ctx.device)
        shifted = torch.stack([signal, torch.zeros_like(spurious)], dim=1).to(ctx.device)
        labels = labels.to(ctx.device)
        results = {}
        for index, (arm, decay) in enumerate((("baseline", 0.0), ("intervention", params.weight_decay))):
            torch.manual_seed(ctx.seed)
            probe = torch.nn.Linear(2, 1).to(ctx.device)
            optimiser = torch.optim.SGD(probe.parameters(), lr=0.1, weight_decay=decay)
            for step in range(params.steps):
                check_stop(ctx)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(train).squeeze(1), labels)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if step % max(1, params.steps // 100) == 0 or step + 1 == params.steps:  # ~100 points
                    ctx.log_series("train_loss", step + 1, loss.item(), arm=arm)
                ctx.progress((index + (step + 1) / params.steps) / 2, f"{arm}: step {step + 1}")
            weights = probe.weight.detach().abs().squeeze(0)
            with torch.no_grad():
                accuracy = ((probe(shifted).squeeze(1) > 0).float() == labels).float().mean().item()
            results[arm] = {
                "spurious_reliance": (weights[1] / weights.sum()).item(),
                "shifted_accuracy": accuracy,
            }
            ctx.log(f"{arm}: weights {weights.tolist()}")
        ctx.save_artifact("results.json", json.dumps(results).encode(), "application/json")
        return results
