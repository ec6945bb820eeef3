"""Superposition in toy ReLU models: sparse features are packed into fewer dimensions.

Reproduced figures
------------------
Measured with the default parameters on one CPU thread (baseline: sparsity 0 -> intervention:
sparsity 0.99). The copy kept per arm is selected on one held-out sample and the metrics are
reported on another (since plugin version 1.1.0; before, the same sample did both, which
flattered the sparse arm's loss). Seeds 0, 1 (session 17, current code):

* features_represented: 5 / 5 -> 11 / 11. Dense: exactly the 5 most important features,
  orthogonal (||W_i|| = 1.0, the rest ~0), as in the paper's first panel; sparse: 11 features in
  5 dimensions, including antipodal pairs among the most important ones, as in its high-sparsity
  panels. (Version 1.0.0, selection on the reported data, seeds 0-2: 12 / 12 / 12; at sparsity
  0.999, preset "very_sparse": 13 / 14 / 14, not re-measured.) The paper's highest-sparsity
  panels show more features still; the least important ones (importance 0.7^13 ~ 0.01) get
  little gradient in a 2,000-step budget.
* features_in_superposition: 0 / 0 -> 11 / 11, so monosemanticity 1.0 -> 0.0: every
  represented feature interferes with others (sum_j (W_i_hat . W_j)^2 between ~1, an antipodal
  partner, and ~2.3), while the dense model's interference is < 1e-3: the threshold 0.1 sits
  far from both.
* pentagon: 0 / 0 -> 1 / 1 (version 1.0.0: 10 of 10 seeds with the best of 8 copies; 9 of 10
  with a single copy, ``instances=1``): consecutive angles of 72 +/- 1 degrees.
* weighted_loss (relative to the all-zero reconstruction): 0.0420 / 0.0418 -> 0.0303 / 0.0283,
  a gain of 28% / 32% (mean -30%). With one copy (``instances=1``, no selection at all):
  0.0420 / 0.0418 -> 0.0405 / 0.0255 (-4% / -39%, mean -21%: one copy often stalls in a worse
  minimum). Version 1.0.0, which selected on the reported data, gave 0.027 / 0.026 / 0.027
  (-36%): part of that gain was the selection's optimism. With sparse inputs, superposition buys
  a better reconstruction of what the model sees, but the size of the gain depends on how many
  copies are tried; 2 seeds are too few to pin it down. (At sparsity 0.9 it is worse than
  dense: 0.069, with 9 features represented; version 1.0.0, not re-measured.)
* Wall time per seed, both arms: 10-12 s on a shared 2-core machine (1 thread), 3 s with
  ``instances=1``; tiny preset ~0.5 s.

Paper
-----
Nelson Elhage, Tristan Hume, Catherine Olsson, Nicholas Schiefer, Tom Henighan, Shauna Kravec,
Zac Hatfield-Dodds, Robert Lasenby, Dawn Drain, Carol Chen, Roger Grosse, Sam McCandlish, Jared
Kaplan, Dario Amodei, Martin Wattenberg & Christopher Olah, "Toy Models of Superposition",
Transformer Circuits Thread, 2022. https://transformer-circuits.pub/2022/toy_model/index.html,
arXiv:2209.10652.

The paper's figures this plugin should approach:

* The introduction / "Superposition as a phase change" figures (W^T W and ||W_i|| for n=20
  features in m=5 dimensions, importance 0.7^i, sparsity 0 ... 0.999): with dense inputs the
  model represents only the 5 most important features, orthogonally, and ignores the rest; as
  sparsity rises it represents more and more features, in superposition (interfering with one
  another). ``features_represented`` goes from 5 to well above 5.
* The "uniform superposition" / feature geometry figures: five features of equal importance in
  two dimensions at high sparsity are arranged as a regular pentagon (72 degrees apart). Such
  geometry can fail on a run (a copy stuck in a local minimum), so ``pentagon`` is a 0/1 outcome
  per seed whose mean over seeds is a success rate.

Model and arms
--------------
x' = ReLU(W^T W x + b), W of shape (m, n). Each of the n features is zero with probability S
(the sparsity), else uniform in [0, 1]; the loss is the importance-weighted squared error
sum_i I_i (x_i - x'_i)^2 with I_i = decay^i. Every arm trains ``instances`` independent copies of
the model as one batched model (one weight tensor with an instance dimension) and keeps the copy
with the lowest loss on a held-out selection sample (toy models sometimes stall in local
minima); every metric is then computed on a second held-out sample, drawn from a different
generator seed, that the selection never saw. The pentagon
model (n=5, m=2, equal importance) is trained alongside, at the same sparsity.

* ``baseline``: dense inputs (``baseline_sparsity``, default 0);
* ``intervention``: sparse inputs (``sparsity``, default 0.99; try 0.999).

Seeds in parallel
-----------------
The plugin opts in to ``batched_seeds``: ``run_seeds`` trains several seeds' copies as one batched
model (the instance dimension holds seed 0's ``instances`` copies, then seed 1's, ...; one Adam
over the stacked weights). ``run`` is ``run_seeds`` on one seed, so there is one training loop.
Each seed draws its initial weights and its training data from generators of its own, seeded
with its seed, in the order the global generators were used before (CPU: one stream for both;
CUDA: initial weights from the CPU stream, data from the device's), so a seed's numbers do not
depend on which seeds share its batch: on the CPU they are bit-identical to the seed alone
(Adam is elementwise, the summed loss gives each copy the gradient of its own loss, and a batched
matrix product multiplies each copy's matrices alone). On a GPU, cuBLAS may pick another kernel
for a larger batch, so the stated tolerance (``batched_seeds_tolerance``) admits float rounding;
a count metric or the copy selection could then flip on a near-tie.

Metrics
-------
* ``features_represented`` (diagnostic): number of features with ||W_i|| > ``represented_threshold``.
* ``features_in_superposition`` (diagnostic): represented features i whose interference with the
  other features, sum_{j != i} (W_i/||W_i|| . W_j)^2 (the paper's colouring of the ||W_i|| bars),
  exceeds ``superposition_threshold``.
* ``monosemanticity`` (safety, higher is better): the share of represented features that are not
  in superposition, i.e. that own a direction no other feature uses. This is the plugin's
  "interpretability of the representation" axis: a feature with its own orthogonal direction can
  be read off the hidden layer by a single projection with no interference, while features in
  superposition share directions, so any direction in the hidden space responds to several
  features (polysemanticity) -- the obstacle to interpretability the paper is about. 1.0 means
  every represented feature is cleanly readable; it falls as superposition sets in. The safety
  label is a judgement call: the dense model "wins" this metric by representing only 5 of the 20
  features and dropping the other 15, so it rewards legibility of what is kept, not coverage.
* All metrics carry version 2 since plugin 1.1.0 (copy selected on a separate held-out sample).
* ``weighted_loss`` (capability, lower is better): importance-weighted reconstruction loss on
  held-out data, divided by that of the all-zero reconstruction on the same data, so that arms
  with different input sparsity can be compared (1.0 = nothing reconstructed, 0.0 = perfect).
* ``pentagon`` (diagnostic): 1.0 if the five features of the n=5, m=2 model are all represented
  and consecutive angles are all within 72 +/- ``pentagon_tolerance_deg`` degrees, else 0.0.

Curves
------
``train_loss`` per arm (``ctx.log_series``, each seed's context its own): the n=20 model's
importance-weighted squared error on the training batch, the mean over that seed's copies (not
relative to the zero reconstruction, so the sparse arm's is far smaller), at step 1, every
``steps // 100`` steps and the last (~100 points). Logging only reads losses each step computes
anyway, so the metrics are unchanged and the version stays 1.1.0 (checked bit for bit against the
code without the curve: tiny preset, seeds 0-2, alone and batched; defaults, seed 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
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

PENTAGON_FEATURES = 5
PENTAGON_HIDDEN = 2
EVAL_SEED_OFFSET = 1_000_003  # held-out data come from a stream apart from training's
SELECT_SEED_OFFSET = 2_000_003  # the copy is selected on a second held-out sample, not the reported one
HEATMAP_SCALE = 12  # pixels per W^T W entry in wtw.png
HEATMAP_GAP = 12


class SuperpositionParams(Params):
    n_features: int = Field(20, ge=2, le=1000, description="Number of input features n.")
    n_hidden: int = Field(5, ge=1, le=1000, description="Hidden dimensions m (fewer than the features).")
    importance_decay: float = Field(
        0.7, gt=0.0, le=1.0, description="Feature i has importance decay**i (0.7 in the paper)."
    )
    baseline_sparsity: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability that a feature is zero, baseline arm (dense: 0)."
    )
    sparsity: float = Field(0.99, ge=0.0, lt=1.0, description="Probability that a feature is zero, intervention arm.")
    instances: int = Field(
        8, ge=1, le=1024, description="Independent copies trained as one batched model; the best is kept."
    )
    steps: int = Field(2000, ge=1, le=1_000_000, description="Adam steps per arm.")
    batch_size: int = Field(1024, ge=1, le=1_000_000, description="Samples per step and copy.")
    lr: float = Field(1e-2, gt=0.0, le=1.0, description="Adam learning rate (cosine-decayed to 0).")
    eval_size: int = Field(32_768, ge=1, le=10_000_000, description="Held-out samples for the metrics.")
    represented_threshold: float = Field(0.5, gt=0.0, description="A feature is represented when ||W_i|| exceeds this.")
    superposition_threshold: float = Field(
        0.1,
        gt=0.0,
        description="A represented feature is in superposition when sum_j (W_i_hat . W_j)^2 exceeds this.",
    )
    pentagon_tolerance_deg: float = Field(
        10.0, gt=0.0, le=36.0, description="Allowed deviation from 72 degrees between pentagon neighbours."
    )

    @model_validator(mode="after")
    def _fewer_dimensions_than_features(self) -> SuperpositionParams:
        if self.n_hidden >= self.n_features:
            raise ValueError("n_hidden must be smaller than n_features (there is no superposition otherwise)")
        return self


class ToyModel(torch.nn.Module):
    """``instances`` independent copies of x' = ReLU(W^T W x + b), batched along dimension 0."""

    def __init__(
        self, instances: int, n_features: int, n_hidden: int, generators: Sequence[torch.Generator] | None = None
    ) -> None:
        """With ``generators`` (one per seed), the instances are split evenly among them: seed i's
        copies are initialised from ``generators[i]`` alone (as ``instances / len(generators)``
        copies would be from that generator), so that a seed's copies do not depend on its batch."""
        super().__init__()
        std = math.sqrt(2.0 / (n_hidden + n_features))  # Xavier-normal per copy, as in the paper's code
        if generators is None:
            self.W = torch.nn.Parameter(torch.empty(instances, n_hidden, n_features))
            torch.nn.init.normal_(self.W, std=std)
        else:
            if instances % len(generators):
                raise ValueError(f"{instances} instances cannot be split among {len(generators)} generators")
            per_seed = instances // len(generators)
            blocks = [
                torch.empty(per_seed, n_hidden, n_features).normal_(0.0, std, generator=generator)
                for generator in generators
            ]
            self.W = torch.nn.Parameter(torch.cat(blocks))
        self.b = torch.nn.Parameter(torch.zeros(instances, 1, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (instances, batch, n_features) or (batch, n_features), shared by every copy."""
        if x.dim() == 2:
            x = x.expand(self.W.shape[0], -1, -1)
        hidden = torch.bmm(x, self.W.transpose(1, 2))
        return torch.relu(torch.bmm(hidden, self.W) + self.b)


def sample_features(
    shape: tuple[int, ...], sparsity: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Features uniform in [0, 1], each independently zero with probability ``sparsity``.

    One uniform draw u per feature does both: the feature is active when u >= sparsity, and then
    (u - sparsity) / (1 - sparsity) is uniform in [0, 1].
    """
    u = torch.rand(shape, device=device, generator=generator)
    return ((u - sparsity) / (1.0 - sparsity)).clamp_min(0.0)


def weighted_losses(model: ToyModel, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Per-copy importance-weighted squared error, summed over features, averaged over samples."""
    return (importance * (x - model(x)) ** 2).sum(-1).mean(-1)


def feature_stats(W: torch.Tensor, represented_threshold: float, superposition_threshold: float) -> dict[str, Any]:
    """Norms, interference and counts for one copy's W (m, n)."""
    norms = W.norm(dim=0)
    directions = W / norms.clamp_min(1e-8)
    overlaps = directions.T @ W  # [i, j] = W_i_hat . W_j
    interference = (overlaps**2).sum(dim=1) - (overlaps.diagonal() ** 2)
    represented = norms > represented_threshold
    superposed = represented & (interference > superposition_threshold)
    count = int(represented.sum())
    return {
        "norms": norms,
        "interference": interference,
        "represented": count,
        "superposed": int(superposed.sum()),
        "monosemanticity": (count - int(superposed.sum())) / count if count else 0.0,
    }


def is_regular_pentagon(W: torch.Tensor, represented_threshold: float, tolerance_deg: float) -> bool:
    """Whether the 5 columns of a (2, 5) W are all represented and spaced 72 +/- tolerance degrees."""
    if W.shape != (PENTAGON_HIDDEN, PENTAGON_FEATURES):
        raise ValueError(f"expected a (2, 5) matrix, got {tuple(W.shape)}")
    if bool((W.norm(dim=0) <= represented_threshold).any()):
        return False
    angles = torch.sort(torch.atan2(W[1], W[0])).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    return bool(((torch.rad2deg(gaps) - 72.0).abs() <= tolerance_deg).all())


def heatmap(matrices: list[torch.Tensor]) -> torch.Tensor:
    """Side-by-side RGB heatmaps (red positive, blue negative, white 0) of square matrices in [-1, 1]."""
    size = matrices[0].shape[0] * HEATMAP_SCALE
    image = torch.ones(size + 2 * HEATMAP_GAP, len(matrices) * (size + HEATMAP_GAP) + HEATMAP_GAP, 3)
    for index, matrix in enumerate(matrices):
        value = matrix.detach().float().cpu().clamp(-1.0, 1.0)
        value = value.repeat_interleave(HEATMAP_SCALE, 0).repeat_interleave(HEATMAP_SCALE, 1)
        rgb = torch.stack([1 - value.clamp_max(0).abs(), 1 - value.abs(), 1 - value.clamp_min(0)], dim=-1)
        left = HEATMAP_GAP + index * (size + HEATMAP_GAP)
        image[HEATMAP_GAP : HEATMAP_GAP + size, left : left + size] = rgb
    return image


class SuperpositionExperiment(Experiment):
    """Dense (baseline) vs sparse (intervention) inputs in a toy model of superposition."""

    name = "superposition"
    version = "1.1.0"
    Params = SuperpositionParams
    metrics = (
        Metric(
            "monosemanticity",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            version=2,
            description=(
                "Share of represented features that own a direction (not in superposition): "
                "how readable the hidden representation is. Safety because a feature with its own "
                "direction can be read off (monitored) by one projection. A judgement call: the dense "
                "model scores 1.0 by dropping 15 of its 20 features, so a higher score can mean less "
                "represented, not a more legible model of everything it sees."
            ),
        ),
        Metric(
            "weighted_loss",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.RATIO,
            version=2,
            description=(
                "Importance-weighted reconstruction loss on held-out data the copy selection never "
                "saw, relative to the all-zero reconstruction (1 = nothing reconstructed)."
            ),
        ),
        Metric(
            "features_represented",
            Axis.DIAGNOSTIC,
            higher_is_better=True,
            unit="features",
            scale=Scale.DIFFERENCE,
            version=2,
            description="Features with ||W_i|| above represented_threshold (0.5), of n=20 in m=5 dimensions.",
        ),
        Metric(
            "features_in_superposition",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="features",
            scale=Scale.DIFFERENCE,
            version=2,
            description="Represented features with sum_j (W_i_hat . W_j)^2 above superposition_threshold (0.1).",
        ),
        Metric(
            "pentagon",
            Axis.DIAGNOSTIC,
            higher_is_better=True,
            unit="success",
            scale=Scale.PROPORTION,
            version=2,
            description=(
                "1 if five equal-importance features in 2 dimensions form a regular pentagon "
                "(72 +/- 10 degrees), else 0: its mean over seeds is a success rate."
            ),
        ),
    )
    arms = (BASELINE, INTERVENTION)
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {"steps": 600, "instances": 2, "batch_size": 256, "eval_size": 4096, "lr": 3e-2},
        "default": {},
        "very_sparse": {"sparsity": 0.999},
        "gpu": {"steps": 20_000, "instances": 32, "batch_size": 4096, "eval_size": 262_144, "lr": 3e-3},
    }

    batched_seeds = True
    # Bit-identical on the CPU (checked for seeds 0-2 of the tiny preset); the slack is for a GPU,
    # where a batched matrix product may round differently from the one-seed one.
    batched_seeds_tolerance = 1e-4

    def run(self, params: SuperpositionParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        return self.run_seeds(params, [ctx])[0]

    def run_seeds(self, params: SuperpositionParams, ctxs: Sequence[RunContext]) -> list[dict[str, dict[str, float]]]:
        """Every seed of ``ctxs`` trained as one batched model: seed i's result is ``run``'s for it."""
        arm_sparsity = {BASELINE: params.baseline_sparsity, INTERVENTION: params.sparsity}
        results: list[dict[str, dict[str, float]]] = [{} for _ in ctxs]
        wtw: list[list[torch.Tensor]] = [[] for _ in ctxs]
        for index, arm in enumerate(self.arms):
            for position, (metrics, best_W) in enumerate(self._run_arm(arm, index, arm_sparsity[arm], params, ctxs)):
                results[position][arm] = metrics
                wtw[position].append(best_W.T @ best_W)
        for ctx, matrices in zip(ctxs, wtw, strict=True):
            ctx.save_artifact("wtw.png", png_bytes(heatmap(matrices)), "image/png")
            ctx.progress(1.0, "done")
        return results

    def _run_arm(
        self, arm: str, index: int, sparsity: float, params: SuperpositionParams, ctxs: Sequence[RunContext]
    ) -> list[tuple[dict[str, float], torch.Tensor]]:
        first = ctxs[0]
        seed_everything(first.seed, deterministic=first.deterministic)  # deterministic kernels, when asked
        device = first.device
        k = params.instances
        S = len(ctxs)
        # One generator per seed, seeded as seed_everything seeds the global ones: initial weights come
        # from the CPU stream (the model is built on the CPU), training data from the device's stream,
        # which on the CPU is that same stream, after the weights.
        init_generators = [torch.Generator().manual_seed(ctx.seed) for ctx in ctxs]
        data_generators = (
            init_generators if device.type == "cpu"
            else [torch.Generator(device=device).manual_seed(ctx.seed) for ctx in ctxs]
        )
        importance = params.importance_decay ** torch.arange(params.n_features, device=device)
        # Each generator draws its seed's W, then its pentagon W: the order of a one-seed run.
        model = ToyModel(S * k, params.n_features, params.n_hidden, init_generators)
        pentagon_model = ToyModel(S * k, PENTAGON_FEATURES, PENTAGON_HIDDEN, init_generators)
        model.to(device)
        pentagon_model.to(device)
        optimizer = torch.optim.Adam([*model.parameters(), *pentagon_model.parameters()], lr=params.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.steps)
        ones = torch.ones(PENTAGON_FEATURES, device=device)
        for ctx in ctxs:
            ctx.log(
                f"{arm}: sparsity {sparsity}, {k} copies of n={params.n_features} in m={params.n_hidden} "
                f"and of n=5 in m=2, {params.steps} steps"
                + (f" (seeds {[c.seed for c in ctxs]} trained as one batched model)" if S > 1 else "")
            )
        started = time.perf_counter()
        report_every = max(1, params.steps // 20)
        # the curve (ctx.log_series, each seed's own): train_loss, the n=20 model's importance-weighted
        # squared error on the training batch, mean over the seed's copies, at step 1, every
        # steps // 100 and the last step (~100 points per arm); it only reads the losses already computed
        curve_every = max(1, params.steps // 100)
        u = torch.empty(S * k, params.batch_size, params.n_features, device=device)
        u5 = torch.empty(S * k, params.batch_size, PENTAGON_FEATURES, device=device)
        for step in range(params.steps):
            if step % 100 == 0:
                for ctx in ctxs:
                    check_stop(ctx)
            for position, generator in enumerate(data_generators):  # each seed's draws, in its order
                rows = slice(position * k, (position + 1) * k)
                u[rows].uniform_(generator=generator)
                u5[rows].uniform_(generator=generator)
            x = ((u - sparsity) / (1.0 - sparsity)).clamp_min(0.0)  # sample_features, from those draws
            x5 = ((u5 - sparsity) / (1.0 - sparsity)).clamp_min(0.0)
            copy_losses = weighted_losses(model, x, importance)
            pentagon_losses = weighted_losses(pentagon_model, x5, ones)
            # Summed over copies: each copy's gradient is that of its own loss, whatever the batch.
            loss = copy_losses.sum() + pentagon_losses.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step == 0 or (step + 1) % curve_every == 0 or step + 1 == params.steps:
                for ctx, seed_losses in zip(ctxs, copy_losses.detach().view(S, k).tolist(), strict=True):
                    value = math.fsum(seed_losses) / k
                    if math.isfinite(value):  # a diverged loss is no curve point
                        ctx.log_series("train_loss", step + 1, value, arm=arm)
            if (step + 1) % report_every == 0 or step + 1 == params.steps:
                per_seed = (
                    copy_losses.detach().view(S, k).sum(1) + pentagon_losses.detach().view(S, k).sum(1)
                ).tolist()
                for ctx, seed_loss in zip(ctxs, per_seed, strict=True):
                    ctx.progress(
                        (index + (step + 1) / params.steps) / len(self.arms),
                        f"{arm}: step {step + 1}/{params.steps}, loss {seed_loss / k:.3g}",
                    )
        for ctx in ctxs:
            check_stop(ctx)
        elapsed = time.perf_counter() - started
        return [
            self._evaluate(arm, sparsity, params, ctx, model.W[i * k : (i + 1) * k], model.b[i * k : (i + 1) * k],
                           pentagon_model.W[i * k : (i + 1) * k], pentagon_model.b[i * k : (i + 1) * k],
                           importance, elapsed)
            for i, ctx in enumerate(ctxs)
        ]

    def _evaluate(
        self, arm: str, sparsity: float, params: SuperpositionParams, ctx: RunContext, W_all: torch.Tensor,
        b_all: torch.Tensor, W5_all: torch.Tensor, b5_all: torch.Tensor, importance: torch.Tensor, elapsed: float,
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One seed's metrics from its ``instances`` copies (W_all: (k, m, n)) and its pentagon copies."""
        device = ctx.device
        k = params.instances
        model = _copies(W_all, b_all)
        pentagon_model = _copies(W5_all, b5_all)
        ones = torch.ones(PENTAGON_FEATURES, device=device)
        # Two held-out samples, each from a generator apart from training's: the copy is selected
        # on the first and the metrics are reported on the second, which the selection never saw
        # (selecting and reporting on the same data would flatter the best copy's loss).
        select_generator = torch.Generator(device=device).manual_seed(ctx.seed + SELECT_SEED_OFFSET)
        generator = torch.Generator(device=device).manual_seed(ctx.seed + EVAL_SEED_OFFSET)
        with torch.no_grad():
            xs = sample_features((params.eval_size, params.n_features), sparsity, device, select_generator)
            xs5 = sample_features((params.eval_size, PENTAGON_FEATURES), sparsity, device, select_generator)
            selection_losses = weighted_losses(model, xs, importance)
            selection_zero = (importance * xs**2).sum(-1).mean().clamp_min(1e-12)
            best = int(selection_losses.argmin())
            best5 = int(weighted_losses(pentagon_model, xs5, ones).argmin())
            x = sample_features((params.eval_size, params.n_features), sparsity, device, generator)
            losses = weighted_losses(model, x, importance)
            zero_loss = (importance * x**2).sum(-1).mean().clamp_min(1e-12)
            W = model.W[best].detach().cpu()
            W5 = pentagon_model.W[best5].detach().cpu()
        stats = feature_stats(W, params.represented_threshold, params.superposition_threshold)
        pentagon = is_regular_pentagon(W5, params.represented_threshold, params.pentagon_tolerance_deg)
        angles = torch.rad2deg(torch.sort(torch.atan2(W5[1], W5[0])).values).round().int().tolist()
        metrics = {
            "monosemanticity": float(stats["monosemanticity"]),
            "weighted_loss": float(losses[best] / zero_loss),
            "features_represented": float(stats["represented"]),
            "features_in_superposition": float(stats["superposed"]),
            "pentagon": 1.0 if pentagon else 0.0,
        }
        ctx.log(
            f"{arm}: copy {best} of {k} selected on a separate held-out sample (its relative loss there "
            f"{float(selection_losses[best] / selection_zero):.6g}; on the reported sample "
            f"{metrics['weighted_loss']:.6g})"
        )
        ctx.log(
            f"{arm}: trained in {elapsed:.1f}s; best copy {best}; "
            + ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())
        )
        ctx.log(f"{arm}: ||W_i|| = {[round(v, 2) for v in stats['norms'].tolist()]}")
        ctx.log(
            f"{arm}: n=5/m=2 model feature angles (deg) {angles}, norms "
            f"{[round(v, 2) for v in W5.norm(dim=0).tolist()]}"
        )
        return metrics, W


def _copies(W: torch.Tensor, b: torch.Tensor) -> ToyModel:
    """A ToyModel holding the given copies (views of a batched model's weights; for evaluation)."""
    model = ToyModel.__new__(ToyModel)
    torch.nn.Module.__init__(model)
    model.W = torch.nn.Parameter(W.detach(), requires_grad=False)
    model.b = torch.nn.Parameter(b.detach(), requires_grad=False)
    return model
