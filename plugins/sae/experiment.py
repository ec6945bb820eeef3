"""Sparse autoencoders recover ground-truth features from superposition.

Reproduces Sharkey, Braun & Millidge, *[Interim research report] Taking features out of
superposition with sparse autoencoders* (AI Alignment Forum / LessWrong, December 2022).
Synthetic data: ``n_features`` ground-truth unit vectors in ``input_dim`` dimensions (more features
than dimensions, so they are in superposition); each sample activates a few of them, feature ``i``
with a probability that decays with ``i``, at magnitudes drawn from U(0, 1). A one-layer ReLU
autoencoder with a dictionary of ``dict_ratio`` x ``n_features`` latents, unit-norm decoder columns
(renormalised after every step) and Adam is trained on fresh samples.

Arms (same seed, same features, same sample stream, same budget):

- ``baseline``: no sparsity penalty (L1 coefficient 0): a plain overcomplete autoencoder.
- ``intervention``: the L1 penalty ``l1_coefficient`` on the latent activations.

The paper's figure to approach: the mean max cosine similarity (MMCS) between the learned
dictionary and the true features, plotted against the L1 coefficient and the dictionary size. At
a well-chosen L1 coefficient and a dictionary at least as large as the number of true features,
MMCS reaches about 0.99 (near-perfect recovery); with too little L1 it stays near the value for a
random dictionary, and with more L1 the reconstruction gets worse (a trade-off).

Reproduced figures (CPU, one thread, default parameters, seeds 0-2): MMCS 0.376-0.378 without L1
(a random 256-atom dictionary scores about 0.35) versus 0.991-0.992 with L1 = 0.1, matching the
paper's ~0.99 plateau. The trade-off shows too: the fraction of variance unexplained rises from
0.0001-0.0005 to 0.066-0.067, and the number of active latents per sample falls from about 225 of
256 to 16-17 (5 true features are active on average).

Why this safety label: ``mmcs`` counts as safety because a dictionary whose atoms are the true
features lets one read off (monitor, audit) what a representation is made of; it is a judgement
call, since recovering a synthetic dictionary is a proxy for interpretable latents on a real model.
``fvu`` is the capability the sparsity penalty costs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    Experiment,
    Metric,
    Params,
    Resources,
    RunContext,
    Scale,
    check_stop,
    png_bytes,
    seed_everything,
)
from pydantic import Field, model_validator


class SparseAutoencoderParams(Params):
    input_dim: int = Field(64, ge=2, le=4096, description="Observed dimensions of the synthetic data.")
    n_features: int = Field(
        128, ge=2, le=16384, description="Ground-truth features (unit vectors) superposed in the data."
    )
    dict_ratio: float = Field(
        2.0, ge=0.25, le=16.0, description="Dictionary size as a multiple of the number of true features."
    )
    mean_active_features: float = Field(
        5.0, gt=0.0, le=256.0, description="Expected number of true features active in one sample."
    )
    probability_decay: float = Field(
        0.99,
        gt=0.0,
        le=1.0,
        description="Feature i is active with probability proportional to decay**i (1 = all equally likely).",
    )
    l1_coefficient: float = Field(
        0.1,
        gt=0.0,
        le=100.0,
        description="L1 penalty on latent activations in the intervention arm (the baseline uses 0). "
        "The loss is the squared reconstruction error summed over dimensions plus this times the summed "
        "absolute latent activations, both averaged over the batch.",
    )
    steps: int = Field(4000, ge=1, le=1_000_000, description="Adam steps per arm.")
    batch_size: int = Field(256, ge=1, le=65536, description="Fresh samples per step.")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate.")
    eval_samples: int = Field(
        8192, ge=16, le=1_000_000, description="Held-out samples for FVU and L0 (the same for both arms)."
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> SparseAutoencoderParams:
        if self.mean_active_features > self.n_features:
            raise ValueError("mean_active_features cannot exceed n_features")
        if round(self.dict_ratio * self.n_features) < 1:
            raise ValueError("the dictionary would have no latents")
        return self


def feature_probabilities(params: SparseAutoencoderParams) -> torch.Tensor:
    """Activation probability of each true feature: decaying with its index, summing to the mean."""
    weights = params.probability_decay ** torch.arange(params.n_features, dtype=torch.float64)
    probabilities = params.mean_active_features * weights / weights.sum()
    return probabilities.clamp(max=1.0).float()


def sample_data(
    features: torch.Tensor, probabilities: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` samples: each a sum of active true features with magnitudes from U(0, 1)."""
    device = features.device
    shape = (n, features.shape[0])
    active = torch.rand(shape, generator=generator, device=device) < probabilities
    magnitudes = torch.rand(shape, generator=generator, device=device)
    return (active * magnitudes) @ features


def synthetic_problem(
    params: SparseAutoencoderParams, ctx: RunContext, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The true features, their probabilities, the held-out set and the dictionary size (logged).

    Features and held-out set come from a CPU generator, so they are the same on every device; the
    training stream comes from a device generator re-seeded for each arm (by the caller)."""
    cpu_generator = torch.Generator().manual_seed(ctx.seed)
    features = F.normalize(torch.randn(params.n_features, params.input_dim, generator=cpu_generator), dim=1)
    probabilities = feature_probabilities(params)
    eval_x = sample_data(features, probabilities, params.eval_samples, cpu_generator).to(device)
    features, probabilities = features.to(device), probabilities.to(device)
    n_latents = round(params.dict_ratio * params.n_features)
    ctx.log(
        f"{params.n_features} true features in {params.input_dim} dims, "
        f"{probabilities.sum().item():.2f} active per sample on average; dictionary of {n_latents}"
    )
    return features, probabilities, eval_x, n_latents


class SparseAutoencoder(torch.nn.Module):
    """x -> ReLU(W_e x + b_e) -> W_d h + b_d, with unit-norm decoder columns."""

    def __init__(self, input_dim: int, n_latents: int) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(input_dim, n_latents)
        self.decoder = torch.nn.Linear(n_latents, input_dim)
        torch.nn.init.zeros_(self.encoder.bias)
        torch.nn.init.zeros_(self.decoder.bias)
        self.normalise_decoder()

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.decoder.weight.copy_(F.normalize(self.decoder.weight, dim=0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = F.relu(self.encoder(x))
        return self.decoder(latents), latents


class SparseAutoencoderExperiment(Experiment):
    """Does an L1 penalty make an overcomplete autoencoder recover the true features?"""

    name = "sae"
    version = "1.0.0"
    Params = SparseAutoencoderParams
    metrics = (
        Metric(
            "mmcs",
            Axis.SAFETY,
            higher_is_better=True,
            unit="cosine",
            scale=Scale.PROPORTION,
            description="Mean over true features of the highest cosine similarity with any decoder column "
            "(1 = every true feature has an exact dictionary atom; a random dictionary scores about 0.35 "
            "at default sizes). Safety because a dictionary whose atoms are the true features lets one read "
            "off (monitor, audit) what a representation is made of; a judgement call: recovering a synthetic "
            "dictionary is a proxy for interpretable latents on a real model, and a higher score does not by "
            "itself make a model safer.",
        ),
        Metric(
            "fvu",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.RATIO,
            description="Fraction of variance unexplained on held-out samples: squared reconstruction error "
            "over the total variance of the data.",
        ),
        Metric(
            "l0",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="latents",
            scale=Scale.DIFFERENCE,
            description="Mean number of active (positive) latents per held-out sample (0 when a strong L1 "
            "penalty kills every latent, so compared as a difference, not a ratio).",
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {
            "input_dim": 16,
            "n_features": 32,
            "mean_active_features": 3.0,
            "steps": 600,
            "batch_size": 128,
            "learning_rate": 3e-3,
            "eval_samples": 1024,
        },
        # Not run on a GPU yet; on the CPU, 256 features in 128 dims (8 active) gave MMCS 0.996 at L1 0.1.
        "gpu": {
            "input_dim": 256,
            "n_features": 512,
            "dict_ratio": 2.0,
            "mean_active_features": 8.0,
            "steps": 20000,
            "batch_size": 1024,
            "eval_samples": 65536,
        },
    }

    def run(self, params: SparseAutoencoderParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        features, probabilities, eval_x, n_latents = synthetic_problem(params, ctx, device)

        results: dict[str, dict[str, float]] = {}
        cosine_images = []
        for arm_index, (arm, l1) in enumerate(((BASELINE, 0.0), (INTERVENTION, params.l1_coefficient))):
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            model = SparseAutoencoder(params.input_dim, n_latents).to(device)
            optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
            stream = torch.Generator(device=device).manual_seed(ctx.seed + 1)
            report_every = max(1, params.steps // 20)
            curve_every = max(1, params.steps // 100)  # the training loss curve: ~100 points per arm
            for step in range(1, params.steps + 1):
                x = sample_data(features, probabilities, params.batch_size, stream)
                reconstruction, latents = model(x)
                loss = (reconstruction - x).pow(2).sum(1).mean()
                if l1:
                    loss = loss + l1 * latents.abs().sum(1).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                model.normalise_decoder()
                if step % curve_every == 0 or step == 1 or step == params.steps:
                    value = float(loss.detach())
                    if math.isfinite(value):  # a diverged loss is no curve point
                        ctx.log_series("train_loss", step, value, arm=arm)
                if step % report_every == 0 or step == params.steps:
                    check_stop(ctx)
                    ctx.progress((arm_index + step / params.steps) / 2, f"{arm}: step {step}/{params.steps}")

            with torch.no_grad():
                reconstruction, latents = model(eval_x)
                fvu = (reconstruction - eval_x).pow(2).sum() / (eval_x - eval_x.mean(0)).pow(2).sum()
                l0 = (latents > 0).float().sum(1).mean()
                cosines = features @ model.decoder.weight  # true features x latents; both unit norm
                mmcs = cosines.max(dim=1).values.mean()
                cosine_images.append(_cosine_image(cosines))
            results[arm] = {"mmcs": float(mmcs), "fvu": float(fvu), "l0": float(l0)}
            ctx.log(f"{arm} (l1={l1:g}): " + ", ".join(f"{k}={v:.4f}" for k, v in results[arm].items()))

        separator = torch.ones(4, cosine_images[0].shape[1])
        ctx.save_artifact(
            "cosines.png", png_bytes(torch.cat([cosine_images[0], separator, cosine_images[1]])), "image/png"
        )
        return results


def _cosine_image(cosines: torch.Tensor) -> torch.Tensor:
    """|cosine| of true features (rows) with latents (columns), latents ordered by their best feature.

    Near-perfect recovery shows as a sharp diagonal band.
    """
    magnitude = cosines.abs().cpu()
    order = torch.argsort(magnitude.argmax(dim=0) * 2.0 - magnitude.max(dim=0).values)
    image = magnitude[:, order]
    scale = max(1, math.ceil(256 / image.shape[0]))
    return image.repeat_interleave(scale, dim=0)
