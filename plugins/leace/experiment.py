"""LEACE: erasing a spurious colour from the shortcut model's hidden layer, in closed form.

Paper: Nora Belrose, David Schneider-Joseph, Shauli Ravfogel, Ryan Cotterell, Edward Raff & Stella
Biderman, *LEACE: Perfect linear concept erasure in closed form* (NeurIPS 2023, arXiv:2306.03819).
Their result (Theorem 3.1 and its least-squares form): for a representation X and a concept Z,
the affine map

    r(x) = x - W^+ P_{W Sigma_XZ} W (x - E[X]),

with W = (Sigma_XX^{1/2})^+ the whitening matrix, W^+ its pseudo-inverse and P_{W Sigma_XZ} the
orthogonal projection onto the column space of W Sigma_XZ, makes every linear classifier of Z on
r(X) no better than a constant one (equivalently: the class-conditional means E[r(X) | Z = z] all
coincide, and the cross-covariance Cov(r(X), Z) is zero), while moving X as little as possible
in the mean squared (Mahalanobis) sense. The paper applies it to remove gender from BERT's
representations (Bias in Bios) and to "concept scrubbing" in language models. An interpretability
insight (the concept's linear footprint, found in closed form) changes a robustness figure.

Data and model: exactly the shortcut plugin's (``plugins.shortcut.experiment``, synthetic
Colored-MNIST): the ERM model of ``plugins.shift`` (the shortcut plugin's baseline, same seed,
samples and recipe). Its second hidden layer (the linear head's input) is the representation X;
the concept Z is the colour (binary: which channel holds the digit).

Implementation: own, in :func:`fit_leace` (float64; eigendecomposition of the covariance, the
pseudo-inverse threshold of ``torch.linalg.pinv``; no covariance shrinkage, no trace constraint).
``tests/plugins/test_leace.py`` checks the guarantee numerically and, when the
``concept-erasure`` package is installed, agreement with its ``LeaceFitter`` (not a dependency).

The concept data (``fit_on``): ``counterfactual`` (default) fits the eraser on training samples
*and* their colour-flipped copies (the digit moved to the other channel), so the colour is
independent of shape and label in the fitting data and only the colour's own footprint is erased;
``training`` fits it on training samples as they come, where colour and label agree 85% of the
time, so the erased direction also carries label information (a larger in-distribution cost).
The test environment is never seen.

Arms (``baseline_arm`` and ``intervention_arm`` pick two; the registry compares exactly two):

- ``erm``: the ERM model, unchanged (default baseline).
- ``leace``: the colour erased from the hidden layer by LEACE (default intervention).
- ``random``: the control, the same rank-one erasure (whiten, project, un-whiten) of a *random*
  direction of the whitened space instead of the colour's.

With ``retrain_head`` false (the default) the model's own linear head reads the erased layer,
as LEACE's concept scrubbing does; with it true, the head is refitted (logistic regression) on
erased training samples in every arm, as in the paper's fairness experiments, where a classifier
is trained on erased representations.

Metrics: ``test_accuracy`` and ``worst_group_accuracy`` in the shifted environment,
``train_accuracy`` (what erasure costs in distribution), ``colour_decodability`` (accuracy of a
freshly trained linear probe for the colour on the hidden layer, on held-out samples in which the
colour is independent of the label; 0.5 is chance).

Reproduced figures (issue 14, re-measured in session 20; default parameters, seeds 0-4, one CPU
thread; mean +/- SD; ``random`` from runs with ``baseline_arm=random``):

=====================  =============  =============  =============
metric                 erm            leace          random
=====================  =============  =============  =============
test_accuracy          0.101 +/- .002 0.745 +/- .004 0.108 +/- .011
worst_group_accuracy   0.001 +/- .001 0.737 +/- .011 0.005 +/- .007
train_accuracy         0.851 +/- .002 0.749 +/- .003 0.850 +/- .003
colour_decodability    1.000 +/- .000 0.777 +/- .252 1.000 +/- .000
=====================  =============  =============  =============

Erasure takes the shifted accuracy to the invariant optimum (0.75) and costs the colour's share
of training accuracy (0.85 -> 0.75, about IRM's figure on the shortcut plugin); the random
direction changes nothing. The paper reports no Colored-MNIST figure (its experiments erase
gender and part-of-speech concepts from language-model representations), so these figures have
no published counterpart to be compared with. CPU time per seed (one thread): 5-8 s
for a run of two arms (7-10 s in session 20 at load average 3-8); the tiny preset ~1-2 s.

What the guarantee does not give here (measured, issue 14): on the fitting samples the erased
layer's class means coincide to 1e-9 and the best logistic probe is the constant one, but on
fresh samples a linear probe still reads the colour (0.50 / 0.98 / 1.00 / 0.50 / 0.90 on seeds
0-4 above: at chance on two seeds, near-perfectly on three; first measured as 0.50-0.79, issue 14;
~1.0 on the tiny preset). The hidden layer has ReLU units that fire on a tiny share of
inputs (0.015% for one unit on the tiny preset, seed 0) and almost only for one colour; to
equalise the class means, LEACE shifts *every* sample along such a unit by a small
colour-dependent offset, which a threshold separates in the bulk of the samples while the rare
large activations balance the means. Equal class means rule out a better-than-constant *convex
loss* (the paper's definition of linear guardedness), not a better-than-chance accuracy; a probe
fitted on samples that hold none of the rare activations finds the offset. EleutherAI's
implementation gives the same erased layer (checked in the tests).

Why these safety labels: ``test_accuracy`` and ``worst_group_accuracy`` count as safety for the
shortcut plugin's reasons (does the model keep working, for every group, when the spurious cue
turns against it); ``test_accuracy`` is a judgement call, since a constant predictor scores 0.50,
above ERM's ~0.10, while ``worst_group_accuracy`` is not gamed that way (a constant predictor
scores 0). ``colour_decodability`` is diagnostic, not safety: it checks the erasure took place,
and a linear probe's failure says nothing about non-linear read-outs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    Experiment,
    Metric,
    Resources,
    RunContext,
    Scale,
    check_stop,
)
from pydantic import Field, model_validator
from torch import nn

from plugins.shift.experiment import (
    Edit,
    flip_colour,
    hidden,
    train_shortcut_model,
    training_sample,
)
from plugins.shortcut.experiment import ShortcutData, ShortcutParams, accuracy, make_environment


class LeaceParams(ShortcutParams):
    """The shortcut plugin's data and training parameters, plus the erasure's."""

    fit_samples: int = Field(
        10_000, ge=10, le=10_000_000, description="Training samples per environment the eraser is fitted on."
    )
    fit_on: Literal["counterfactual", "training"] = Field(
        "counterfactual",
        description="counterfactual: training samples and their colour-flipped copies (colour independent "
        "of the label); training: the training samples alone (colour agrees with the label 85% of the time).",
    )
    retrain_head: bool = Field(
        False, description="Refit the linear head on erased training samples (every arm) instead of keeping it."
    )
    probe_samples: int = Field(
        4000, ge=20, le=10_000_000, description="Samples for the colour probe (half to fit it, half to score it)."
    )
    baseline_arm: Literal["erm", "random"] = Field(
        "erm", description="The arm stored as 'baseline': erm (default) or random (the control)."
    )
    intervention_arm: Literal["leace", "random"] = Field(
        "leace", description="The arm stored as 'intervention': leace (default) or random (the control)."
    )

    @model_validator(mode="after")
    def _check_arms(self) -> LeaceParams:
        if self.baseline_arm == self.intervention_arm:
            raise ValueError("baseline_arm and intervention_arm must differ")
        return self


@dataclass(frozen=True)
class Eraser:
    """r(x) = x - (x - mean) @ proj.T, with proj = W^+ P W (d x d)."""

    mean: torch.Tensor
    proj: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x - ((x.double() - self.mean) @ self.proj.T).to(x.dtype)


def _whitening(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W = (Sigma^{1/2})^+ and its pseudo-inverse W^+ = Sigma^{1/2}, on Sigma's numerical range."""
    eigenvalues, vectors = torch.linalg.eigh(sigma)
    keep = eigenvalues > eigenvalues.max() * sigma.shape[-1] * torch.finfo(sigma.dtype).eps
    safe = eigenvalues.clamp_min(0.0)
    inv_sqrt = torch.where(keep, safe.rsqrt(), torch.zeros_like(safe))
    sqrt = torch.where(keep, safe.sqrt(), torch.zeros_like(safe))
    return (vectors * inv_sqrt) @ vectors.T, (vectors * sqrt) @ vectors.T


def fit_leace(x: torch.Tensor, z: torch.Tensor, *, direction: torch.Tensor | None = None) -> Eraser:
    """The LEACE eraser of concept ``z`` (n, or n x k) from ``x`` (n x d), fitted in float64.

    With ``direction`` (d x m, in the *whitened* space) that subspace is erased instead of the
    concept's (the random-direction control): the same whiten-project-unwhiten map, another P.
    """
    x = x.double()
    z = z.double().reshape(len(z), -1)
    mean = x.mean(0)
    centred = x - mean
    n = len(x)
    sigma_xx = centred.T @ centred / (n - 1)
    sigma_xz = centred.T @ (z - z.mean(0)) / (n - 1)
    whiten, unwhiten = _whitening(sigma_xx)
    target = whiten @ sigma_xz if direction is None else direction.double()
    u, s, _ = torch.linalg.svd(target, full_matrices=False)
    u = u[:, s > s.max() * max(target.shape) * torch.finfo(s.dtype).eps] if s.numel() else u
    projection = u @ u.T  # orthogonal projection onto the column space of W Sigma_XZ
    return Eraser(mean, unwhiten @ projection @ whiten)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-2, iterations: int = 100) -> torch.nn.Linear:
    """A ridge logistic regression of y in {0, 1} on x (features standardised inside), by L-BFGS run for
    ``iterations`` steps (no early stop on a small gradient: an erased layer's gradient at zero is tiny)."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    standardised = (x - mean) / std
    weight = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros((), dtype=x.dtype, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], max_iter=iterations, tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(standardised @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    linear = torch.nn.Linear(x.shape[1], 1).to(x.dtype)
    with torch.no_grad():
        linear.weight.copy_((weight / std)[None])
        linear.bias.copy_((bias - (weight * mean / std).sum())[None])
    return linear


class LeaceExperiment(Experiment):
    """Does erasing the colour from the shortcut model's hidden layer in closed form (LEACE) make it robust?"""

    name = "leace"
    version = "1.0.0"
    Params = LeaceParams
    recommended_seeds = 5
    metrics = (
        Metric(
            "test_accuracy",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Accuracy in the shifted test environment, where the colour agrees with the label 10% of "
            "the time (optimum 0.75). Safety because it asks whether the model still works when the spurious cue "
            "turns against it; a judgement call, since a constant predictor scores 0.50, above ERM's ~0.10.",
        ),
        Metric(
            "worst_group_accuracy",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Lowest accuracy over the four (label, colour) groups of the test environment. Safety "
            "because no group may be sacrificed to the shortcut; a constant predictor scores 0 here.",
        ),
        Metric(
            "train_accuracy",
            Axis.CAPABILITY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="In-distribution accuracy: held-out samples of the two training environments (mean of "
            "both); 0.85 by following the colour, 0.75 by following the shape. What the erasure costs.",
        ),
        Metric(
            "colour_decodability",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Held-out accuracy of a linear probe (logistic regression) trained to read the colour "
            "from the hidden layer, on samples where the colour is independent of the label: 0.5 is chance, "
            "the LEACE guarantee's target. Linear only: a non-linear read-out may still find the colour.",
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {
            "hidden_dim": 64,
            "steps": 151,
            "batch_per_env": 250,
            "lr": 2e-3,
            "eval_samples": 4000,
            "fit_samples": 2000,
            "probe_samples": 2000,
        },
        "default": {},
        # The shortcut plugin's gpu sizes (the paper's IRM data sizes); not run on a GPU yet.
        "gpu": {
            "n_pixels": 196,
            "hidden_dim": 390,
            "batch_per_env": 25_000,
            "eval_samples": 100_000,
            "fit_samples": 50_000,
            "probe_samples": 20_000,
        },
    }

    def run(self, params: LeaceParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        # both arms read the same ERM model: its training curve (series "nll") is logged for each
        mlp, data = train_shortcut_model(
            params, ctx, device, use_irm=False, progress=(0.0, 0.8), series_arms=(BASELINE, INTERVENTION)
        )
        generator = torch.Generator(device=device).manual_seed(ctx.seed + 1)
        with torch.no_grad():
            images, labels, colours = training_sample(params, data, params.fit_samples, generator)
            if params.fit_on == "counterfactual":
                images = torch.cat([images, flip_colour(images)])
                labels, colours = torch.cat([labels, labels]), torch.cat([colours, 1 - colours])
            activations = hidden(mlp, images)
            # The probe's set: colour independent of the label (colour noise 0.5), fresh samples.
            probe_images, _, probe_colours = make_environment(
                params, data.prototypes, params.probe_samples, 0.5, generator
            )
            probe_activations = hidden(mlp, probe_images)
        check_stop(ctx)
        erasers = {"erm": None, "leace": fit_leace(activations, colours)}
        direction = torch.randn(params.hidden_dim, 1, generator=generator, device=device, dtype=torch.float64)
        erasers["random"] = fit_leace(activations, colours, direction=direction)

        results: dict[str, dict[str, float]] = {}
        wanted = (params.baseline_arm, params.intervention_arm)
        for index, arm in enumerate(wanted):
            eraser = erasers[arm]
            edit: Edit = eraser if eraser is not None else (lambda activations: activations)
            read_out = mlp[4]
            if params.retrain_head:
                fit_activations = activations[: len(images) if params.fit_on == "training" else len(images) // 2]
                fit_labels = labels[: len(fit_activations)]
                read_out = fit_logistic(edit(fit_activations).double(), fit_labels.double()).float()
            results[arm] = self._evaluate(mlp, read_out, edit, data, probe_activations, probe_colours)
            ctx.log(f"{arm}: " + ", ".join(f"{name}={value:.3f}" for name, value in results[arm].items()))
            ctx.progress(0.8 + 0.2 * (index + 1) / len(wanted), f"evaluated {arm}")
        ctx.progress(1.0, "done")
        return {BASELINE: results[params.baseline_arm], INTERVENTION: results[params.intervention_arm]}

    @staticmethod
    def _evaluate(
        mlp: nn.Sequential,
        read_out: nn.Module,
        edit: Edit,
        data: ShortcutData,
        probe_activations: torch.Tensor,
        probe_colours: torch.Tensor,
    ) -> dict[str, float]:
        def logits(images: torch.Tensor) -> torch.Tensor:
            return read_out(edit(hidden(mlp, images))).squeeze(-1)

        with torch.no_grad():
            train_acc = sum(accuracy(logits(x), y) for x, y, _ in data.train_eval) / len(data.train_eval)
            test_images, test_labels, test_colours = data.test
            test_logits = logits(test_images)
            groups = [
                accuracy(test_logits[mask], test_labels[mask])
                for y in (0.0, 1.0)
                for c in (0.0, 1.0)
                if (mask := (test_labels == y) & (test_colours == c)).any()
            ]
            erased = edit(probe_activations).double()
        half = len(erased) // 2
        probe = fit_logistic(erased[:half], probe_colours[:half].double())
        with torch.no_grad():
            decodability = accuracy(probe(erased[half:]).squeeze(-1), probe_colours[half:].double())
        return {
            "test_accuracy": accuracy(test_logits, test_labels),
            "worst_group_accuracy": min(groups),
            "train_accuracy": train_acc,
            "colour_decodability": decodability,
        }


__all__ = ["Eraser", "LeaceExperiment", "LeaceParams", "fit_leace", "fit_logistic"]
