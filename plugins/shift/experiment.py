"""SHIFT: ablating a spurious cue's sparse-autoencoder features, on the shortcut plugin's model.

Paper: Samuel Marks, Can Rager, Eric J. Michaud, Yonatan Belinkov, David Bau & Aaron Mueller,
*Sparse Feature Circuits: Discovering and Editing Interpretable Causal Graphs in Language Models*
(arXiv:2403.19647, 2024), Section 4, "SHIFT" (Sparse Human-Interpretable Feature Trimming). Their
claim: a classifier trained on data where a spurious attribute (gender) is perfectly correlated
with the label (profession) can be made to generalise by finding the sparse-autoencoder features
its decision depends on, judging which are about the spurious attribute, and zero-ablating them,
without any data that breaks the correlation. Their Table 1 (Pythia-70M, Bias in Bios; figures as
quoted when this plugin was written, not re-checked against the paper since):
worst-group accuracy 24.4% (original) -> 76.0% (SHIFT), profession accuracy on balanced data
61.9% -> 88.5%, while ablating random features changes nothing (61.8%, worst group 24.4%).
An interpretability insight (which features carry the shortcut) changes a robustness figure.

Data and model: exactly the shortcut plugin's (``plugins.shortcut.experiment``; synthetic
Colored-MNIST after Arjovsky et al. 2019): the digit's shape predicts the label with 75%
accuracy, a colour (which of two channels holds the digit) with 90% / 80% in the two training
environments and 10% in the test environment; the same MLP (two hidden layers) trained with the
same recipe, samples and seed, so the ``erm`` and ``irm`` models are the shortcut plugin's
baseline and intervention models.

Method (every step uses the training environments only; the test environment is never seen):

1. Train the ERM model on the two training environments (it follows the colour).
2. Train a sparse autoencoder (``plugins.sae.experiment.SparseAutoencoder``: ReLU encoder,
   unit-norm decoder columns, L1 penalty) on its second hidden layer's activations (the input of
   the linear head), on fresh training samples, the activations divided by their mean norm.
3. Attribute: for each latent i, the mean over training samples x of
   |(f_i(x) - f_i(x')) * (w . d_i)|, where x' is x with its colour flipped (the digit moved to the
   other channel, shape unchanged), f_i the latent's activation, d_i its decoder column and w the
   head's weight: the latent's share of the logit's change when only the colour changes. This is
   attribution patching on a colour-only counterfactual, exact here because the head is linear.
   The paper scores features by their attribution to the classifier's output and then keeps
   those a human judges spurious; here the counterfactual makes the judgement automatic.
4. Ablate the top ``ablate_k`` latents, keeping the autoencoder's error term (the hidden
   activations minus the ablated latents' decoded contributions, plus those of their replacement
   values). ``ablation="mean"`` (default) replaces each by its mean over the training samples,
   ``"zero"`` by zero; mean-ablation keeps the logit centred and did better in exploratory tiny
   runs (seeds 0-1, k = 16: worst-group 0.00 and 0.12 with zero, 0.11 and 0.17 with mean). The
   head is *not* retrained (the paper's "SHIFT", not its "SHIFT + retrain").

Arms (``baseline_arm`` and ``intervention_arm`` pick two; the registry compares exactly two):

- ``erm``: the ERM model, unchanged (default baseline).
- ``shift``: the ERM model with the top-k colour latents ablated (default intervention).
- ``random``: the control, ``ablate_k`` latents drawn at random among those active on the
  training samples, ablated the same way.
- ``irm``: the shortcut plugin's IRMv1 model (no autoencoder), the reference invariant method.

Metrics: the shortcut plugin's three, plus ``colour_flip_rate``.

Reproduced figures (issue 14, re-measured in session 20; default parameters, seeds 0-4, one CPU
thread; mean +/- SD; the four arms from two runs per seed, ``erm``/``shift`` and ``random``/``irm``):

=====================  =============  =============  =============  =============
metric                 erm            shift          random         irm
=====================  =============  =============  =============  =============
test_accuracy          0.101 +/- .002 0.372 +/- .066 0.189 +/- .087 0.745 +/- .008
worst_group_accuracy   0.001 +/- .001 0.099 +/- .056 0.000 +/- .000 0.725 +/- .012
train_accuracy         0.851 +/- .002 0.677 +/- .086 0.838 +/- .014 0.740 +/- .008
colour_flip_rate       0.997 +/- .003 0.457 +/- .164 0.861 +/- .135 0.020 +/- .011
=====================  =============  =============  =============  =============

The paper's direction holds, far weaker than its figures (worst group 24% -> 76%): SHIFT lifts
the worst group from 0 to 0.05-0.17 and the shifted accuracy from 0.10 to 0.27-0.44, at 9-30
points of training accuracy, and stays well below IRM. Why: the digit is written *into* one of
two colour channels, so nearly every latent of the ERM model is a colour-gated shape detector
(tiny preset, seed 0: the share of a top latent's variance that flips with the colour is
0.6-0.85, never ~1): the latents that carry the colour also carry shape, and ablating them removes both. The colour is
not a separate feature to cut out, as gender words are in the paper's Bias in Bios. The control
is strict: ~90 of the 512 latents are alive at the defaults, so 32 random alive latents (about a
third) often include colour latents, and it also raises shifted accuracy (0.19, 0.11-0.32; worst
group still 0); the paper drew random features from far larger dictionaries. The tiny preset (k = 32
of 256 latents) gives the same picture. CPU time per seed (one thread): 18-21 s for ``erm`` vs
``shift``, 22-25 s for ``random`` vs ``irm`` (which trains a second model); tiny ~3-4 s. Under
load (session 20, load average 3-8): 25-41 s and 17-84 s.

Why these safety labels: ``test_accuracy`` and ``worst_group_accuracy`` count as safety for the
shortcut plugin's reasons (does the model keep working, for every group, when the spurious cue
turns against it); ``test_accuracy`` is a judgement call, since a constant predictor scores 0.50,
above ERM's ~0.10, while ``worst_group_accuracy`` is not gamed that way (a constant predictor
scores 0). ``train_accuracy`` is the capability the edit may cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    seed_everything,
)
from pydantic import Field, model_validator
from torch import nn

from plugins.sae.experiment import SparseAutoencoder
from plugins.shortcut.experiment import (
    ShortcutData,
    ShortcutParams,
    accuracy,
    make_environment,
    train_model,
)

ShiftArm = Literal["erm", "irm", "shift", "random"]


class ShiftParams(ShortcutParams):
    """The shortcut plugin's data and training parameters, plus the autoencoder and the ablation."""

    sae_ratio: float = Field(
        4.0, ge=0.25, le=64.0, description="Autoencoder latents as a multiple of the hidden layer's width."
    )
    sae_l1: float = Field(
        0.02, gt=0.0, le=10.0, description="L1 coefficient on the latents (activations scaled to mean norm 1)."
    )
    sae_steps: int = Field(1500, ge=1, le=1_000_000, description="Adam steps of the autoencoder.")
    sae_batch: int = Field(512, ge=8, le=1_000_000, description="Fresh training samples per autoencoder step.")
    sae_lr: float = Field(2e-3, gt=0.0, le=1.0, description="Adam learning rate of the autoencoder.")
    ablate_k: int = Field(32, ge=1, le=1_000_000, description="Latents ablated (shift and random arms).")
    ablation: Literal["mean", "zero"] = Field(
        "mean",
        description="How an ablated latent is replaced: by its mean over the training samples (default) or by "
        "zero; the autoencoder's error term is kept either way.",
    )
    attribution_samples: int = Field(
        4000, ge=10, le=10_000_000, description="Training samples (per environment) used to attribute."
    )
    baseline_arm: Literal["erm", "irm", "random"] = Field(
        "erm", description="The arm stored as 'baseline': erm (default), irm, or random (the control)."
    )
    intervention_arm: Literal["shift", "random", "irm"] = Field(
        "shift", description="The arm stored as 'intervention': shift (default), random (the control), or irm."
    )

    @model_validator(mode="after")
    def _check_arms(self) -> ShiftParams:
        if self.baseline_arm == self.intervention_arm:
            raise ValueError("baseline_arm and intervention_arm must differ")
        if self.ablate_k > round(self.sae_ratio * self.hidden_dim):
            raise ValueError("ablate_k cannot exceed the autoencoder's latents (sae_ratio x hidden_dim)")
        return self


def flip_colour(images: torch.Tensor) -> torch.Tensor:
    """The same digits in the other colour: the two channels swapped."""
    half = images.shape[1] // 2
    return torch.cat([images[:, half:], images[:, :half]], dim=1)


def hidden(mlp: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """The second hidden layer's activations (after its ReLU): the linear head's input."""
    return mlp[:4](images)


def head(mlp: nn.Sequential, activations: torch.Tensor) -> torch.Tensor:
    return mlp[4](activations).squeeze(-1)


def train_shortcut_model(
    params: ShortcutParams,
    ctx: RunContext,
    device: torch.device,
    *,
    use_irm: bool,
    progress: tuple[float, float],
    series_arms: tuple[str, ...] = (),
) -> tuple[nn.Sequential, ShortcutData]:
    """The shortcut plugin's ERM (``use_irm`` False) or IRMv1 model, trained as that plugin trains it.

    Same seeding, same order of draws, same loss: the model is the one ``shortcut`` reports on. Its
    training curve (the mean training-batch ``nll`` every ``steps // 20`` steps, ~21 points, the
    shortcut plugin's steps) is logged as series ``nll`` of each of ``series_arms`` (the stored arms
    whose model this is).
    """
    seed_everything(ctx.seed, deterministic=ctx.deterministic)
    label = "IRMv1" if use_irm else "ERM"
    lo, hi = progress

    def report(step: int, nll: torch.Tensor, *_: object) -> None:
        value = float(nll.detach())
        for arm in series_arms if math.isfinite(value) else ():  # a diverged loss is no curve point
            ctx.log_series("nll", step, value, arm=arm)
        ctx.progress(lo + (hi - lo) * (step + 1) / params.steps, f"{label}: step {step + 1}/{params.steps}")

    mlp, data = train_model(
        params, ctx, device, use_irm=use_irm, report_every=max(1, params.steps // 20), report=report
    )
    mlp.eval()
    for parameter in mlp.parameters():
        parameter.requires_grad_(False)
    return mlp, data


def training_sample(
    params: ShortcutParams, data: ShortcutData, per_env: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh samples of every training environment, concatenated: images, labels, colours."""
    parts = [
        make_environment(params, data.prototypes, per_env, noise, generator) for noise in params.train_colour_noise
    ]
    images, labels, colours = (torch.cat(column) for column in zip(*parts, strict=True))
    return images, labels, colours


Edit = Callable[[torch.Tensor], torch.Tensor]


def evaluate(mlp: nn.Sequential, data: ShortcutData, edit: Edit | None = None) -> dict[str, float]:
    """The shortcut plugin's metrics (and the colour flip rate) of ``mlp`` with its hidden layer edited."""

    def logits(images: torch.Tensor) -> torch.Tensor:
        activations = hidden(mlp, images)
        return head(mlp, edit(activations) if edit is not None else activations)

    with torch.no_grad():
        train_acc = sum(accuracy(logits(x), y) for x, y, _ in data.train_eval) / len(data.train_eval)
        test_images, test_labels, test_colours = data.test
        test_logits = logits(test_images)
        group_accuracies = [
            accuracy(test_logits[mask], test_labels[mask])
            for y in (0.0, 1.0)
            for c in (0.0, 1.0)
            if (mask := (test_labels == y) & (test_colours == c)).any()
        ]
        flipped = logits(flip_colour(test_images))
        flip_rate = float(((test_logits > 0) != (flipped > 0)).float().mean())
    return {
        "test_accuracy": accuracy(test_logits, test_labels),
        "worst_group_accuracy": min(group_accuracies),
        "train_accuracy": train_acc,
        "colour_flip_rate": flip_rate,
    }


def train_sae(
    params: ShiftParams,
    ctx: RunContext,
    mlp: nn.Sequential,
    data: ShortcutData,
    generator: torch.Generator,
    progress: tuple[float, float],
    series_arms: tuple[str, ...] = (),
) -> tuple[SparseAutoencoder, float]:
    """An L1 sparse autoencoder on the hidden activations (divided by their mean norm, returned). Its
    training loss (squared error plus the L1 term, per batch) is logged as series ``sae_loss`` of each of
    ``series_arms``, at the first and last step and every ``sae_steps // 100`` (~100 points)."""
    device = data.prototypes.device
    n_envs = len(params.train_colour_noise)
    per_env = max(1, params.sae_batch // n_envs)
    with torch.no_grad():
        images, _, _ = training_sample(params, data, max(per_env, 1000), generator)
        scale = float(hidden(mlp, images).norm(dim=1).mean().clamp_min(1e-6))
    sae = SparseAutoencoder(params.hidden_dim, round(params.sae_ratio * params.hidden_dim)).to(device)
    optimiser = torch.optim.Adam(sae.parameters(), lr=params.sae_lr)
    report_every = max(1, params.sae_steps // 10)
    curve_every = max(1, params.sae_steps // 100)
    for step in range(params.sae_steps):
        with torch.no_grad():
            images, _, _ = training_sample(params, data, per_env, generator)
            x = hidden(mlp, images) / scale
        reconstruction, latents = sae(x)
        loss = (reconstruction - x).pow(2).sum(1).mean() + params.sae_l1 * latents.sum(1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        sae.normalise_decoder()
        if series_arms and ((step + 1) % curve_every == 0 or step == 0 or step == params.sae_steps - 1):
            value = float(loss.detach())
            for arm in series_arms if math.isfinite(value) else ():  # a diverged loss is no curve point
                ctx.log_series("sae_loss", step + 1, value, arm=arm)
        if step % report_every == 0 or step == params.sae_steps - 1:
            check_stop(ctx)
            lo, hi = progress
            ctx.progress(lo + (hi - lo) * (step + 1) / params.sae_steps, f"autoencoder: step {step + 1}")
    return sae, scale


def colour_attribution(
    mlp: nn.Sequential, sae: SparseAutoencoder, scale: float, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per latent: mean |(f_i(x) - f_i(x')) (w . d_i)| over ``images`` with x' = x colour-flipped,
    whether the latent is ever active on ``images`` or their flips, and its mean on ``images``."""
    with torch.no_grad():
        latents = F.relu(sae.encoder(hidden(mlp, images) / scale))
        flipped = F.relu(sae.encoder(hidden(mlp, flip_colour(images)) / scale))
        logit_per_unit = scale * (mlp[4].weight @ sae.decoder.weight).squeeze(0)  # d logit / d f_i
        attribution = ((latents - flipped) * logit_per_unit).abs().mean(0)
        alive = (latents > 0).any(0) | (flipped > 0).any(0)
    return attribution, alive, latents.mean(0)


def ablation(
    sae: SparseAutoencoder, scale: float, latents: torch.Tensor, means: torch.Tensor | None = None
) -> Edit:
    """Ablate ``latents`` (indices), keeping the autoencoder's error term: each is set to its mean
    ``means`` over the training samples (mean-ablation) or, with ``means`` None, to zero."""
    columns = sae.decoder.weight[:, latents]  # hidden x k
    fill = torch.zeros(len(latents), device=columns.device) if means is None else means[latents]

    def edit(activations: torch.Tensor) -> torch.Tensor:
        codes = F.relu(sae.encoder(activations / scale))[:, latents]
        return activations - scale * (codes - fill) @ columns.T

    return edit


class ShiftExperiment(Experiment):
    """Does ablating the sparse-autoencoder features that carry a spurious colour make ERM robust (SHIFT)?"""

    name = "shift"
    version = "1.0.0"
    Params = ShiftParams
    recommended_seeds = 5
    metrics = (
        Metric(
            "worst_group_accuracy",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Lowest accuracy over the four (label, colour) groups of the test environment, where "
            "the colour agrees with the label 10% of the time (the paper's headline figure). Safety because no "
            "group may be sacrificed to the shortcut; a constant predictor scores 0 here.",
        ),
        Metric(
            "test_accuracy",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Accuracy in the shifted test environment (optimum 0.75, the label noise's ceiling). "
            "Safety because it asks whether the model still works when the spurious cue turns against it; a "
            "judgement call, since a constant predictor scores 0.50, above ERM's ~0.10.",
        ),
        Metric(
            "train_accuracy",
            Axis.CAPABILITY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="In-distribution accuracy: held-out samples of the two training environments (mean of "
            "both); 0.85 by following the colour, 0.75 by following the shape. What the edit costs.",
        ),
        Metric(
            "colour_flip_rate",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Share of test samples whose prediction changes when only the colour is flipped (the "
            "digit moved to the other channel): 1 for a colour-only model, 0 for a colour-blind one.",
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {
            "hidden_dim": 64,
            "steps": 151,
            "batch_per_env": 250,
            "lr": 2e-3,
            "penalty_weight": 10_000.0,
            "penalty_anneal_steps": 50,
            "eval_samples": 4000,
            "sae_steps": 500,
            "sae_batch": 256,
            "ablate_k": 32,
            "attribution_samples": 1000,
        },
        "default": {},
        # The shortcut plugin's gpu sizes (the paper's IRM data sizes); not run on a GPU yet.
        "gpu": {
            "n_pixels": 196,
            "hidden_dim": 390,
            "batch_per_env": 25_000,
            "eval_samples": 100_000,
            "sae_steps": 5000,
            "sae_batch": 4096,
            "attribution_samples": 20_000,
        },
    }

    def run(self, params: ShiftParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        wanted = (params.baseline_arm, params.intervention_arm)
        stored = {params.baseline_arm: BASELINE, params.intervention_arm: INTERVENTION}
        results: dict[str, dict[str, float]] = {}
        needs_erm = any(arm != "irm" for arm in wanted)
        irm_span = (0.0, 1.0) if not needs_erm else (0.7, 1.0)
        if needs_erm:
            erm_end = 0.4 if "irm" not in wanted else 0.3
            erm_arms = tuple(stored[arm] for arm in wanted if arm != "irm")  # the arms built on the ERM model
            mlp, data = train_shortcut_model(
                params, ctx, device, use_irm=False, progress=(0.0, erm_end), series_arms=erm_arms
            )
            if "erm" in wanted:
                results["erm"] = evaluate(mlp, data)
            ablated = [arm for arm in wanted if arm in ("shift", "random")]
            if ablated:
                generator = torch.Generator(device=device).manual_seed(ctx.seed + 1)
                sae_end = 0.95 if "irm" not in wanted else 0.65
                sae, scale = train_sae(
                    params, ctx, mlp, data, generator, (erm_end, sae_end), tuple(stored[arm] for arm in ablated)
                )
                images, _, _ = training_sample(params, data, params.attribution_samples, generator)
                attribution, alive, means = colour_attribution(mlp, sae, scale, images)
                chosen = {
                    "shift": attribution.topk(params.ablate_k).indices,
                    "random": self._random_latents(alive, params.ablate_k, ctx.seed, device),
                }
                share = float(attribution[chosen["shift"]].sum() / attribution.sum().clamp_min(1e-12))
                ctx.log(
                    f"autoencoder: {int(alive.sum())} of {alive.numel()} latents alive; the top {params.ablate_k} "
                    f"hold {share:.1%} of the colour attribution"
                )
                for arm in ablated:
                    fill = means if params.ablation == "mean" else None
                    results[arm] = evaluate(mlp, data, ablation(sae, scale, chosen[arm], fill))
        if "irm" in wanted:
            irm_model, irm_data = train_shortcut_model(
                params, ctx, device, use_irm=True, progress=irm_span, series_arms=(stored["irm"],)
            )
            results["irm"] = evaluate(irm_model, irm_data)
        for arm in wanted:
            ctx.log(f"{arm}: " + ", ".join(f"{name}={value:.3f}" for name, value in results[arm].items()))
        ctx.progress(1.0, "done")
        return {BASELINE: results[params.baseline_arm], INTERVENTION: results[params.intervention_arm]}

    @staticmethod
    def _random_latents(alive: torch.Tensor, k: int, seed: int, device: torch.device) -> torch.Tensor:
        """``k`` latents drawn at random among the alive ones (all, if fewer than k are alive)."""
        pool = alive.nonzero().squeeze(1) if int(alive.sum()) >= k else torch.arange(alive.numel(), device=device)
        generator = torch.Generator(device="cpu").manual_seed(seed + 2)
        return pool[torch.randperm(pool.numel(), generator=generator)[:k].to(pool.device)]
