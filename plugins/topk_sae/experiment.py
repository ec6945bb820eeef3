"""TopK sparse autoencoders against L1 at matched L0, on the sae plugin's synthetic data.

Paper: Leo Gao, Tom Dupré la Tour, Henk Tillman, Gabriel Goh, Rajan Troll, Alec Radford, Ilya
Sutskever, Jan Leike & Jeffrey Wu, *Scaling and evaluating sparse autoencoders* (arXiv:2406.04093,
2024). Their claim: replacing the L1 penalty by a TopK activation (keep the k largest
pre-activations per sample, zero the rest) sets the sparsity L0 = k directly, removes the
shrinkage an L1 penalty puts on every active latent, and gives a better reconstruction at the same
L0 (their Fig. 2, and the L0-MSE frontiers of Section 5); latents are also more often
interpretable. An interpretability insight (shrinkage and sparsity are different things, and
the L1 penalty trades one for the other) changes a capability figure (reconstruction at fixed
sparsity).

Data: exactly the sae plugin's (``plugins.sae.experiment``: ``n_features`` ground-truth unit
vectors superposed in ``input_dim`` dimensions, feature i active with a probability decaying in i,
magnitudes U(0, 1), fresh samples every step); the same model class (ReLU encoder with bias,
unit-norm decoder columns renormalised after every Adam step, decoder bias).

Arms (same seed, same features, same sample stream, same initialisation, same budget):

- ``baseline``: L1 SAE, squared error plus ``l1_coefficient`` times the summed latent activations.
- ``intervention``: TopK SAE, squared error only; latents = ReLU of the ``k`` largest encoder
  pre-activations, the rest zero. ``k`` is *matched* to the baseline by default: the L1 arm is
  trained first and k is its achieved L0 on the held-out set, rounded (at least 1); set ``k`` to
  fix it instead.

Not reproduced from the paper: the AuxK loss against dead latents, the encoder initialised as the
decoder's transpose, the b_pre centring by the geometric median, and any scale: the dictionary
here has 256 latents, the paper's up to 16 million. Dead latents are therefore reported, not
prevented.

Metrics:

- ``mmcs`` (safety, a judgement call): mean over true features of the best cosine similarity with
  a decoder column, as in the sae plugin. Safety because a dictionary whose atoms are the true
  features lets one read off (monitor, audit) what the data are made of; it is a judgement call,
  since recovering a synthetic dictionary is a proxy for interpretable latents on a real model.
- ``fvu`` (capability): fraction of variance unexplained on held-out samples.
- ``l0`` (diagnostic): mean number of active latents per held-out sample (the matching check).
- ``dead_latents`` (diagnostic): share of latents never active on the held-out samples.

Reproduced figures (re-measured 2026-12-03 with the current code; default parameters, one CPU
thread on a shared 2-core machine, seeds 0-4, mean +/- SD over seeds; L1 -> TopK, k matched to
16 / 16 / 17 / 16 / 16):

* fvu: 0.0662 / 0.0671 / 0.0668 / 0.0664 / 0.0671 (0.0667 +/- 0.0004) -> 0.0493 / 0.0502 /
  0.0478 / 0.0510 / 0.0510 (0.0499 +/- 0.0013), 23-28% lower: the paper's direction (better
  reconstruction at the same L0) holds.
* mmcs: 0.9915 / 0.9918 / 0.9911 / 0.9921 / 0.9920 (0.9917 +/- 0.0004) -> 0.9546 / 0.9540 /
  0.9300 / 0.9547 / 0.9564 (0.9500 +/- 0.0112): *not* the direction asked for; TopK recovers the
  true features slightly worse at this L0.
* l0: 16.18 +/- 0.71 -> 15.88 +/- 0.59 (a few top-k pre-activations are negative and cut by the
  ReLU); dead_latents: 0.015 +/- 0.010 -> 0.388 +/- 0.016.
* (Session 17's figures for seeds 0-2 differed in the last digits: TopK mmcs 0.9549 / 0.9555 /
  0.9271, dead latents 0.008 / 0.012 / 0.000 -> 0.379 / 0.375 / 0.363; the code as it was before
  the speed-up below gives exactly the figures above, so the drift is older.)
* Time per seed, both arms: 26.5-34.5 s of CPU (median 27.9; 30.2-35.2, median 31.4, before the
  speed-up: the second arm reuses the first arm's batches, Adam runs as foreach), 48-120 s wall at
  load average 4-9 on the 2 cores; tiny ~1-3 s.

Why recovery does not improve here: the L1 arm's L0 (~16) is about three times the ~5 true
features active per sample, so TopK must spread each sample over ~16 latents, and without AuxK a
third of its dictionary dies, leaving some true features without an atom. Exploratory tiny runs
(2 seeds, not tuned into any default) with stronger L1 gave the same picture at k = 7 (MMCS
0.89 -> 0.77) and the reverse at k = 2 (0.77-0.79 -> 0.86); TopK's FVU was lower in every
setting tried. ``tied_init`` (the paper's encoder initialisation) removed the dead latents on
the tiny preset but did not close the MMCS gap (0.69-0.72 -> 0.62-0.65). The paper measures
interpretability with probes and explanations on language models, not synthetic-feature
recovery, so the MMCS result is a finding about this setting, not a refutation of the paper.
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
    Resources,
    RunContext,
    Scale,
    check_stop,
    png_bytes,
    seed_everything,
)
from pydantic import Field, model_validator

from plugins.sae.experiment import (
    SparseAutoencoder,
    SparseAutoencoderParams,
    _cosine_image,
    sample_data,
    synthetic_problem,
)


class TopKSaeParams(SparseAutoencoderParams):
    """The sae plugin's data and training parameters, plus the TopK arm's k."""

    k: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Active latents per sample in the TopK arm. Empty (null): matched to the L1 arm's "
        "achieved L0 on the held-out samples, rounded (at least 1).",
    )

    tied_init: bool = Field(
        False,
        description="Initialise the encoder as the transpose of the (unit-norm) decoder, in both arms "
        "(the paper's initialisation; it reduces dead latents).",
    )

    @model_validator(mode="after")
    def _check_k(self) -> TopKSaeParams:
        if self.k is not None and self.k > round(self.dict_ratio * self.n_features):
            raise ValueError("k cannot exceed the dictionary size (dict_ratio x n_features)")
        return self


CACHE_BYTES = 512 * 2**20
"""The most memory the first arm's training batches may take to be kept for the second arm."""


def _memory_headroom_bytes() -> int | None:
    """How much more this process may allocate under its run's memory limit (the worker sets an
    address-space rlimit, or a cgroup's memory.max), or None when no limit is set; best effort."""
    import os
    import resource

    headrooms = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as statm:
                virtual = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            virtual = soft
        headrooms.append(soft - virtual)
    try:
        with open("/proc/self/cgroup") as cgroup:
            path = next(line.split(":", 2)[2].strip() for line in cgroup if line.startswith("0::"))
        base = f"/sys/fs/cgroup{path}"
        with open(f"{base}/memory.max") as limit, open(f"{base}/memory.current") as current:
            maximum = limit.read().strip()
            if maximum != "max":
                headrooms.append(int(maximum) - int(current.read()))
    except (OSError, StopIteration, ValueError):
        pass
    return min(headrooms) if headrooms else None


def keep_batches_fits(nbytes: int) -> bool:
    """Whether the first arm's batches (``nbytes``) may be kept: within CACHE_BYTES and within a
    quarter of what the run's memory limit leaves (a run that fitted before the cache still fits)."""
    headroom = _memory_headroom_bytes()
    return nbytes <= CACHE_BYTES and (headroom is None or nbytes <= headroom // 4)


def topk_latents(pre_activations: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest pre-activations of each row; every other latent is zero."""
    values, indices = pre_activations.topk(k, dim=-1)
    return torch.zeros_like(pre_activations).scatter(-1, indices, F.relu(values))


def encode(model: SparseAutoencoder, x: torch.Tensor, k: int | None) -> torch.Tensor:
    """The latents of an L1 SAE (k None: ReLU) or a TopK SAE."""
    pre = model.encoder(x)
    return F.relu(pre) if k is None else topk_latents(pre, k)


class TopKSparseAutoencoderExperiment(Experiment):
    """Does a TopK activation recover the true features at least as well as L1, at the same L0?"""

    name = "topk_sae"
    version = "1.0.0"
    Params = TopKSaeParams
    metrics = (
        Metric(
            "mmcs",
            Axis.SAFETY,
            higher_is_better=True,
            unit="cosine",
            scale=Scale.PROPORTION,
            description="Mean over true features of the highest cosine similarity with any decoder column "
            "(1 = every true feature has an exact atom). Safety because atoms that are the true features "
            "let one read off what the data are made of; a judgement call: synthetic-feature recovery is "
            "a proxy for interpretable latents on a real model.",
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
            description="Mean number of active (positive) latents per held-out sample; the TopK arm's k is "
            "matched to the L1 arm's value by default.",
        ),
        Metric(
            "dead_latents",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Share of the dictionary's latents never active on the held-out samples (the paper "
            "counters them with an AuxK loss, not used here).",
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
        "default": {},
        # The sae plugin's gpu sizes; not run on a GPU yet.
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

    def run(self, params: TopKSaeParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        features, probabilities, eval_x, n_latents = synthetic_problem(params, ctx, device)

        results: dict[str, dict[str, float]] = {}
        cosine_images = []
        k: int | None = params.k
        # Both arms train on the same sample stream (a generator seeded with seed + 1): the first arm's
        # batches are kept and given to the second instead of being drawn again (drawing was ~14% of a
        # default run's profiled time), when they fit (keep_batches_fits; defaults: 250 MiB). Same batches.
        batch_bytes = params.steps * params.batch_size * params.input_dim * 4
        keep_batches = device.type == "cpu" and keep_batches_fits(batch_bytes)
        batches: list[torch.Tensor] = []
        for arm_index, arm in enumerate((BASELINE, INTERVENTION)):
            arm_k = None if arm == BASELINE else k
            l1 = params.l1_coefficient if arm == BASELINE else 0.0
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            model = SparseAutoencoder(params.input_dim, n_latents).to(device)
            if params.tied_init:
                with torch.no_grad():
                    model.encoder.weight.copy_(model.decoder.weight.T)
            parameters = list(model.parameters())
            # foreach: the same Adam arithmetic as the per-tensor loop, in fewer Python calls
            optimiser = torch.optim.Adam(parameters, lr=params.learning_rate, foreach=True)
            replay = len(batches) == params.steps
            stream = None if replay else torch.Generator(device=device).manual_seed(ctx.seed + 1)
            report_every = max(1, params.steps // 20)
            # the curves, as the sae plugin logs them (~100 points per arm): the training objective
            # (train_loss: the L1 arm's includes its penalty) and its squared-error part (reconstruction_loss)
            curve_every = max(1, params.steps // 100)
            for step in range(1, params.steps + 1):
                if replay:
                    x = batches[step - 1]
                else:
                    x = sample_data(features, probabilities, params.batch_size, stream)
                    if keep_batches:
                        batches.append(x)
                latents = encode(model, x, arm_k)
                reconstruction_loss = (model.decoder(latents) - x).pow(2).sum(1).mean()
                loss = reconstruction_loss
                if l1:
                    loss = loss + l1 * latents.abs().sum(1).mean()
                for parameter in parameters:  # zero_grad(set_to_none=True), without its overhead
                    parameter.grad = None
                loss.backward()
                optimiser.step()
                model.normalise_decoder()
                if step % curve_every == 0 or step == 1 or step == params.steps:
                    for name, tensor in (("train_loss", loss), ("reconstruction_loss", reconstruction_loss)):
                        value = float(tensor.detach())
                        if math.isfinite(value):  # a diverged loss is no curve point
                            ctx.log_series(name, step, value, arm=arm)
                if step % report_every == 0 or step == params.steps:
                    check_stop(ctx)
                    ctx.progress((arm_index + step / params.steps) / 2, f"{arm}: step {step}/{params.steps}")
            if replay:
                batches.clear()

            with torch.inference_mode():
                latents = encode(model, eval_x, arm_k)
                reconstruction = model.decoder(latents)
                fvu = (reconstruction - eval_x).pow(2).sum() / (eval_x - eval_x.mean(0)).pow(2).sum()
                active = latents > 0
                l0 = active.float().sum(1).mean()
                dead = (~active.any(dim=0)).float().mean()
                cosines = features @ model.decoder.weight  # true features x latents; both unit norm
                mmcs = cosines.max(dim=1).values.mean()
                cosine_images.append(_cosine_image(cosines))
            results[arm] = {"mmcs": float(mmcs), "fvu": float(fvu), "l0": float(l0), "dead_latents": float(dead)}
            if arm == BASELINE and k is None:
                k = max(1, min(n_latents, round(float(l0))))
                ctx.log(f"TopK arm: k = {k}, matched to the L1 arm's held-out L0 {float(l0):.2f}")
            setting = f"l1={l1:g}" if arm_k is None else f"k={arm_k}"
            ctx.log(f"{arm} ({setting}): " + ", ".join(f"{name}={v:.4f}" for name, v in results[arm].items()))

        separator = torch.ones(4, cosine_images[0].shape[1])
        ctx.save_artifact(
            "cosines.png", png_bytes(torch.cat([cosine_images[0], separator, cosine_images[1]])), "image/png"
        )
        ctx.progress(1.0, "done")
        return results
