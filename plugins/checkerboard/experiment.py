"""Checkerboard artifacts of transposed convolutions, and the resize-convolution fix.

Reproduced figures
------------------
Measured with the default parameters on one CPU thread (seeds 0, 1, 2; baseline -> intervention):

* overlap ratio of the upsampling layer: 4.0 -> 1.0, exactly the paper's 1, 2, 4 pattern.
* checkerboard_energy: 0.332 / 0.295 / 0.284 -> 0.0014 / 0.0010 / 0.0006 (over 99% lower: two
  orders of magnitude where one was expected); a transposed-convolution model is near-pure
  checkerboard at initialisation (0.997), as the paper notes. samples.png shows the pattern of
  the paper's figures.
* pooled_mse (the benchmark): 0.0095 / 0.0093 / 0.0089 -> 0.0086 / 0.0085 / 0.0082: no cost to
  the task (resize-convolution is even ~8% better here).
* full_mse: 0.047 / 0.037 / 0.041 -> 0.0097 / 0.0096 / 0.0091: the artifacts are real pixel error
  that the pooled loss never sees.
* Null control, ``loss="full"``: checkerboard_energy 0.0013 / 0.0014 / 0.0011 -> 0.00018 /
  0.00014 / 0.00013. A loss that sees the artifacts trains them away (the baseline's energy falls
  ~250-fold), so the gap between arms mostly vanishes in absolute terms (it stays ~8x relative).
* Wall time per seed, both arms: 13-17 s on a shared 2-core machine (1 thread); tiny preset ~0.1 s.

Paper
-----
Augustus Odena, Vincent Dumoulin & Chris Olah, "Deconvolution and Checkerboard Artifacts",
Distill, 2016. https://distill.pub/2016/deconv-checkerboard/ (doi:10.23915/distill.00003)

The paper's claims this plugin should approach:

* A transposed convolution whose kernel size is not divisible by its stride overlaps unevenly:
  k=3, s=2 covers output pixels 1, 2, 1, 2, ... times in 1-D, hence 1, 2, 4 times in 2-D (the
  "overlap" figures). ``overlap_ratio`` measures this exactly: 4.0 for the baseline layer, 1.0 for
  resize-convolution.
* The artifacts are present at initialisation and persist when the loss cannot see them (the
  paper's setting: strided discriminators and perceptual losses). Here the training loss is MSE
  after 2x2 average pooling, which is blind to period-2 patterns aligned to the pixel grid; the
  ``loss="full"`` parameter records the null result with plain full-resolution MSE.
* Nearest-neighbour resize followed by a convolution removes them (the "Better upsampling" and
  resize-convolution figures) at no cost to the task: ``pooled_mse`` about equal between arms,
  ``checkerboard_energy`` an order of magnitude lower with resize-convolution.

Setup
-----
A 3-stage x8 upsampler (4 -> 32 px) is trained for super-resolution of smooth synthetic images
(sums of Gaussian blobs); the input is the 32 px target average-pooled to 4 px. Arms:

* ``baseline``: every upsampling stage is a transposed convolution, kernel 3, stride 2;
* ``intervention``: every stage is nearest-neighbour 2x resize then a convolution, kernel 3.

Each arm trains ``models`` (default 8) independently initialised upsamplers side by side, as
grouped convolutions, and reports the means of their metrics: how strong one initialisation's
checkerboard is varies by about +/-40% between seeds, so a single model per seed would make the
registry's 3-seed confidence intervals too wide to confirm even a 99% reduction. Both arms see
the same training batches (same seed, same budget: Adam, batch 32, 400 steps) and are evaluated
on the same held-out batch. ``samples.png`` shows, for six held-out images, the 4 px input, the
32 px target and the output of each arm's first model.

Metrics
-------
* ``checkerboard_energy`` (safety, lower is better): on the held-out outputs, the share of the
  non-DC spectral energy within ``nyquist_radius`` frequency bins of the Nyquist points
  (pi, 0), (0, pi) and (pi, pi) -- the signature of a period-2 checkerboard -- computed through a
  2-D Hann window, averaged over the arm's models. Smooth targets have essentially none (~1e-9),
  so this measures structure the model adds that nobody asked for.
  Labelled safety (does the model do what we intend, beyond what its objective measures); this is
  a judgement call: the artifact is an image-quality defect, not a harm, and its size depends on
  the loss setting: ~260x between arms under the pooled loss, which is blind to all three
  Nyquist components by construction, against ~8x under plain MSE (``loss="full"``), where the
  baseline's energy is ~250x lower. Both settings are honest findings and the example finding
  carries both, as separate, labelled experiments.
* ``pooled_mse`` (capability, lower is better): the training benchmark on held-out data.
* ``full_mse`` (diagnostic): MSE at full 32 px resolution.
* ``overlap_ratio`` (diagnostic): max/min number of kernel taps covering an output pixel of one
  upsampling layer, measured exactly with all-ones weights on a constant input.
"""

from __future__ import annotations

import math
import time
from typing import Literal

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
from pydantic import Field
from torch import nn

IMAGE_SIZE = 32  # target resolution
INPUT_SIZE = 4  # input resolution: three x2 stages
EVAL_SEED_OFFSET = 1_000_003  # the held-out batch is drawn from a stream apart from training's
SAMPLE_COLUMNS = 6  # held-out examples shown in samples.png
SAMPLE_ROWS = 4  # input (nearest-resized), target, baseline output, intervention output
SAMPLE_SCALE = 4  # each 32 px tile is enlarged x4 (nearest) so the artifacts stay visible
SAMPLE_GAP = 4  # white pixels between tiles
SAMPLE_HEIGHT = SAMPLE_ROWS * IMAGE_SIZE * SAMPLE_SCALE + (SAMPLE_ROWS + 1) * SAMPLE_GAP
SAMPLE_WIDTH = SAMPLE_COLUMNS * IMAGE_SIZE * SAMPLE_SCALE + (SAMPLE_COLUMNS + 1) * SAMPLE_GAP

ARM_LAYERS = {BASELINE: "deconv", INTERVENTION: "resize"}


class CheckerboardParams(Params):
    steps: int = Field(400, ge=1, le=100_000, description="Adam steps per arm.")
    batch_size: int = Field(32, ge=1, le=4096, description="Training images per step.")
    channels: int = Field(8, ge=1, le=512, description="Feature channels of each upsampler.")
    models: int = Field(
        8,
        ge=1,
        le=64,
        description=(
            "Independently initialised upsamplers trained side by side per arm; the metrics are their "
            "means (one initialisation's artifact strength varies by about +/-40%)."
        ),
    )
    lr: float = Field(2e-3, gt=0.0, le=1.0, description="Adam learning rate.")
    loss: Literal["pooled", "full"] = Field(
        "pooled",
        description=(
            "Training loss: MSE after 2x2 average pooling ('pooled', blind to period-2 artifacts, "
            "as in the paper's setting) or plain full-resolution MSE ('full', the null control)."
        ),
    )
    blobs: int = Field(6, ge=1, le=64, description="Gaussian blobs per synthetic image.")
    min_sigma: float = Field(1.5, gt=0.0, le=16.0, description="Smallest blob width, in 32 px pixels.")
    max_sigma: float = Field(5.0, gt=0.0, le=16.0, description="Largest blob width, in 32 px pixels.")
    eval_size: int = Field(256, ge=1, le=65_536, description="Held-out images for the metrics.")
    nyquist_radius: int = Field(
        1, ge=1, le=4, description="Frequency bins around each Nyquist point counted as checkerboard."
    )


def make_images(count: int, generator: torch.Generator, params: CheckerboardParams) -> torch.Tensor:
    """Smooth ``(count, 1, 32, 32)`` images in [0, 1]: sums of Gaussian blobs, max-normalised.

    Drawn on the CPU from ``generator`` so that the data are the same on every device.
    """
    shape = (count, params.blobs, 1, 1)
    centre_y = torch.rand(shape, generator=generator) * IMAGE_SIZE
    centre_x = torch.rand(shape, generator=generator) * IMAGE_SIZE
    low, high = sorted((params.min_sigma, params.max_sigma))
    sigma = low + (high - low) * torch.rand(shape, generator=generator)
    amplitude = 0.3 + 0.7 * torch.rand(shape, generator=generator)
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    dy = (coords.view(1, 1, -1, 1) - centre_y) ** 2
    dx = (coords.view(1, 1, 1, -1) - centre_x) ** 2
    images = (amplitude * torch.exp(-(dy + dx) / (2 * sigma**2))).sum(dim=1, keepdim=True)
    return images / images.amax(dim=(-2, -1), keepdim=True)


def downsample(images: torch.Tensor) -> torch.Tensor:
    """The network's 4 px input: the 32 px image average-pooled by 8."""
    return F.avg_pool2d(images, IMAGE_SIZE // INPUT_SIZE)


def upsampling_layer(kind: str, in_channels: int, out_channels: int, groups: int = 1) -> nn.Module:
    """One x2 upsampling layer: transposed conv k3 s2 ("deconv") or nearest resize + conv k3."""
    if kind == "deconv":
        return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, groups=groups)
    if kind == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups),
        )
    raise ValueError(f"unknown upsampling layer {kind!r}")


class Upsampler(nn.Module):
    """``models`` independent 4 px -> 32 px upsamplers side by side, as grouped convolutions.

    Each is a k3 stem convolution, then three x2 upsampling layers with ReLU between; group g of
    every layer belongs to model g only. Input (N, 1, 4, 4), output (N, models, 32, 32).
    """

    def __init__(self, kind: str, channels: int, models: int = 1) -> None:
        super().__init__()
        self.models = models
        width = channels * models
        self.stem = nn.Conv2d(models, width, 3, padding=1, groups=models)
        self.stages = nn.ModuleList(
            [
                upsampling_layer(kind, width, width, models),
                upsampling_layer(kind, width, width, models),
                upsampling_layer(kind, width, models, models),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x.expand(-1, self.models, -1, -1)))
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i < len(self.stages) - 1:
                h = F.relu(h)
        return h


def overlap_ratio(kind: str) -> float:
    """Max/min number of kernel taps that reach an output pixel (interior, away from borders).

    Exact: a one-channel layer with all-ones weights and no bias applied to a constant input
    counts the taps covering each output pixel.
    """
    layer = upsampling_layer(kind, 1, 1)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(1.0 if parameter.dim() > 1 else 0.0)
        counts = layer(torch.ones(1, 1, 8, 8))[0, 0, 2:-2, 2:-2]
    return float(counts.max() / counts.min())


def checkerboard_energy(images: torch.Tensor, radius: int = 1) -> float:
    """Share of the non-DC spectral energy of ``images`` (N, C, H, W) near the Nyquist points.

    Near = within ``radius`` frequency bins (per axis) of (pi, 0), (0, pi) or (pi, pi); the
    energy is summed over the whole batch before taking the share. Each image is centred and
    multiplied by a 2-D Hann window first: without it the wrap-around edges of non-periodic
    images leak energy along the axes up to the Nyquist points (a floor of ~2e-3 on smooth
    targets instead of ~1e-9).
    """
    height, width = images.shape[-2:]
    window = torch.outer(
        torch.hann_window(height, periodic=False, dtype=torch.float64, device=images.device),
        torch.hann_window(width, periodic=False, dtype=torch.float64, device=images.device),
    )
    centred = images.double() - images.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred * window).abs().square().sum(dim=tuple(range(images.dim() - 2)))
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=images.device).abs().view(-1, 1)
    fx = torch.fft.fftfreq(width, d=1.0 / width, device=images.device).abs().view(1, -1)
    near_zero_y, near_zero_x = fy <= radius, fx <= radius
    near_nyquist_y, near_nyquist_x = fy >= height / 2 - radius, fx >= width / 2 - radius
    mask = (near_nyquist_y & near_zero_x) | (near_zero_y & near_nyquist_x) | (near_nyquist_y & near_nyquist_x)
    power[0, 0] = 0.0
    total = power.sum()
    if total <= 0:
        return 0.0
    return float(power[mask].sum() / total)


def pooled_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE after 2x2 average pooling: blind to period-2 patterns aligned to the pixel grid."""
    return F.mse_loss(F.avg_pool2d(output, 2), F.avg_pool2d(target, 2))


def _mean_energy(model: nn.Module, eval_inputs: torch.Tensor, params: CheckerboardParams) -> float:
    """The held-out checkerboard_energy of ``model``'s upsamplers, averaged as the metric is."""
    with torch.no_grad():
        output = model(eval_inputs).contiguous()
        energies = [checkerboard_energy(output[:, [m]], params.nyquist_radius) for m in range(params.models)]
    return sum(energies) / len(energies)


def sample_grid(inputs: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """A grey-scale grid: one row per tensor (N, 1, 32, 32) -- first the nearest-resized inputs."""
    resized = F.interpolate(inputs, size=IMAGE_SIZE, mode="nearest")
    rows = [resized, *rows]
    grid = torch.ones(SAMPLE_HEIGHT, SAMPLE_WIDTH)
    tile = IMAGE_SIZE * SAMPLE_SCALE
    for r, images in enumerate(rows):
        for c in range(min(SAMPLE_COLUMNS, images.shape[0])):
            enlarged = images[c, 0].detach().float().cpu().repeat_interleave(SAMPLE_SCALE, 0)
            enlarged = enlarged.repeat_interleave(SAMPLE_SCALE, 1).clamp(0.0, 1.0)
            top = SAMPLE_GAP + r * (tile + SAMPLE_GAP)
            left = SAMPLE_GAP + c * (tile + SAMPLE_GAP)
            grid[top : top + tile, left : left + tile] = enlarged
    return grid


class CheckerboardExperiment(Experiment):
    """Transposed conv k3 s2 (baseline) vs nearest resize + conv k3 (intervention): see the module doc."""

    name = "checkerboard"
    version = "1.0.0"
    Params = CheckerboardParams
    metrics = (
        Metric(
            "checkerboard_energy",
            Axis.SAFETY,
            higher_is_better=False,
            unit="fraction",
            scale=Scale.RATIO,
            description=(
                "Share of the held-out outputs' non-DC spectral energy near the Nyquist points "
                "(pi,0), (0,pi), (pi,pi): the checkerboard artifact nobody asked for. Safety because it "
                "measures behaviour the objective does not reward and nobody intended (does the model do "
                "what we mean, not only what the loss sees); a judgement call: it is an image-quality "
                "defect, and its size depends on the loss setting (parameter 'loss')."
            ),
        ),
        Metric(
            "pooled_mse",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="MSE",
            scale=Scale.RATIO,
            description="Held-out MSE after 2x2 average pooling (the training benchmark).",
        ),
        Metric(
            "full_mse",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="MSE",
            scale=Scale.RATIO,
            description="Held-out MSE at the full 32 px resolution.",
        ),
        Metric(
            "overlap_ratio",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="ratio",
            scale=Scale.RATIO,
            description="Max/min kernel overlap of the upsampling layer on a constant input (4 for k3 s2).",
        ),
    )
    arms = (BASELINE, INTERVENTION)
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {"steps": 15, "batch_size": 8, "channels": 4, "models": 2, "eval_size": 16},
        "default": {},
        "full_loss": {"loss": "full"},
        "gpu": {"steps": 3000, "batch_size": 64, "channels": 32, "models": 16, "eval_size": 1024},
    }

    def run(self, params: CheckerboardParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        eval_generator = torch.Generator().manual_seed(ctx.seed + EVAL_SEED_OFFSET)
        eval_targets = make_images(params.eval_size, eval_generator, params).to(ctx.device)
        eval_inputs = downsample(eval_targets)
        ctx.log(
            f"held-out targets: checkerboard_energy="
            f"{checkerboard_energy(eval_targets, params.nyquist_radius):.2e} (smooth images have ~none)"
        )
        results: dict[str, dict[str, float]] = {}
        outputs: dict[str, torch.Tensor] = {}
        for index, arm in enumerate(self.arms):
            results[arm], outputs[arm] = self._run_arm(arm, index, params, ctx, eval_inputs, eval_targets)
        grid = sample_grid(eval_inputs, [eval_targets, outputs[BASELINE], outputs[INTERVENTION]])
        ctx.save_artifact("samples.png", png_bytes(grid), "image/png")
        ctx.progress(1.0, "done")
        return results

    def _run_arm(
        self,
        arm: str,
        index: int,
        params: CheckerboardParams,
        ctx: RunContext,
        eval_inputs: torch.Tensor,
        eval_targets: torch.Tensor,
    ) -> tuple[dict[str, float], torch.Tensor]:
        kind = ARM_LAYERS[arm]
        seed_everything(ctx.seed, deterministic=ctx.deterministic)
        generator = torch.Generator().manual_seed(ctx.seed)  # same training batches in both arms
        # channels_last: grouped convolutions are several times faster in it on the CPU.
        model = Upsampler(kind, params.channels, params.models).to(ctx.device, memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        criterion = pooled_mse if params.loss == "pooled" else F.mse_loss
        with torch.no_grad():
            initial = checkerboard_energy(model(eval_inputs)[:, :1], params.nyquist_radius)
        ctx.log(
            f"{arm}: {params.models} x {kind} upsampler, overlap ratio {overlap_ratio(kind):.0f}, "
            f"checkerboard_energy of model 0 at initialisation {initial:.4f}"
        )
        started = time.perf_counter()
        report_every = max(1, params.steps // 20)
        # the curves (ctx.log_series): the training loss at every report (~20 points), and the
        # held-out checkerboard_energy (the metric's definition: the mean over the models) ~10 times
        energy_every = max(1, params.steps // 10)
        ctx.log_series("checkerboard_energy", 0, _mean_energy(model, eval_inputs, params), arm=arm)
        for step in range(params.steps):
            if step % 10 == 0:
                check_stop(ctx)
            targets = make_images(params.batch_size, generator, params).to(ctx.device)
            output = model(downsample(targets))
            loss = criterion(output, targets.expand_as(output))  # the mean of the models' losses
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % report_every == 0 or step + 1 == params.steps:
                if math.isfinite(loss.item()):  # a diverged loss is no curve point
                    ctx.log_series("train_loss", step + 1, loss.item(), arm=arm)
            if (step + 1) % energy_every == 0 and step + 1 < params.steps:
                energy = _mean_energy(model, eval_inputs, params)
                if math.isfinite(energy):
                    ctx.log_series("checkerboard_energy", step + 1, energy, arm=arm)
            if (step + 1) % report_every == 0 or step + 1 == params.steps:
                ctx.progress(
                    (index + (step + 1) / params.steps) / len(self.arms),
                    f"{arm}: step {step + 1}/{params.steps}, {params.loss} loss {loss.item():.5f}",
                )
        check_stop(ctx)
        with torch.no_grad():
            output = model(eval_inputs).contiguous()
            targets = eval_targets.expand_as(output)
            energies = [checkerboard_energy(output[:, [m]], params.nyquist_radius) for m in range(params.models)]
            metrics = {
                "checkerboard_energy": sum(energies) / len(energies),
                "pooled_mse": float(pooled_mse(output, targets)),
                "full_mse": float(F.mse_loss(output, targets)),
                "overlap_ratio": overlap_ratio(kind),
            }
        if math.isfinite(metrics["checkerboard_energy"]):  # the curve ends at the metric itself
            ctx.log_series("checkerboard_energy", params.steps, metrics["checkerboard_energy"], arm=arm)
        ctx.log(
            f"{arm}: trained {params.steps} steps in {time.perf_counter() - started:.1f}s; "
            + ", ".join(f"{name}={value:.5g}" for name, value in metrics.items())
        )
        if params.models > 1:
            ctx.log(f"{arm}: checkerboard_energy per model " + ", ".join(f"{e:.4f}" for e in energies))
        return metrics, output[:, :1].cpu()
