"""Shortcut learning under a spurious colour: ERM versus IRM on a synthetic Colored-MNIST.

Paper: Arjovsky, Bottou, Gulrajani & Lopez-Paz, *Invariant Risk Minimization*, 2019
(arXiv:1907.02893), Section 5.2 and its Colored-MNIST table; the training recipe follows the
paper's reference code (facebookresearch/InvariantRiskMinimization, ``colored_mnist``).

The figures this plugin should approach (mean accuracy, their table):

=====================  =========  ========
method                 train      test
=====================  =========  ========
ERM                    87.4%      17.1%
IRM                    70.8%      66.9%
optimal invariant      75%        75%
=====================  =========  ========

Task: the binary label is "digit < 5", flipped with probability 0.25, so the digit's shape
predicts it with 75% accuracy. A colour is then drawn that agrees with the label with probability
0.9 and 0.8 in the two training environments and 0.1 in the test environment: colour is the
better predictor in training (85%) and a trap at test time. As in the paper, the digit is written
into the red or the green channel of a two-channel image, the other channel being blank.

Design (CPU-sized, data generated in code): MNIST is replaced by 10 random prototype "images"
(64 pixels in [0, 1]) plus Gaussian pixel noise, clipped to [0, 1]; **fresh samples are drawn every
step** (a fixed small training set gets memorised and the numbers drift away from the paper's). An
MLP with two hidden layers of 128 units is trained with Adam and the paper's L2 weight, learning
rate, step count, penalty weight and annealing schedule. Arms: ERM (baseline, penalty 0) versus
IRMv1 (intervention: the squared gradient of each environment's risk with respect to a fixed
dummy classifier scale, weighted 1 until ``penalty_anneal_steps`` and ``penalty_weight`` after,
the loss then divided by that weight, as in the reference code). Both arms start from the same
weights and see the same samples.

Reproduced figures (defaults, seeds 0-2, one CPU thread, ~6 s per seed for both arms):

=====================  =============  =============
metric                 ERM            IRMv1
=====================  =============  =============
train_accuracy         0.847-0.852    0.726-0.746
test_accuracy          0.098-0.103    0.734-0.752
worst_group_accuracy   0.000-0.001    0.712-0.731
=====================  =============  =============

Both arms land nearer the ideal than the paper's: with fresh samples ERM cannot memorise, so it
settles on the colour's Bayes rate (85% train, 10% test, against the paper's 87.4 / 17.1), and IRM
reaches the invariant optimum (~75 / 75, against 70.8 / 66.9) because the synthetic digits are
easy to tell apart, whereas the paper's IRM still leaned partly on colour. The direction and size
of the effect (test accuracy about 7 times higher, at ~11 points of training accuracy) match.
(These figures are from an earlier session; an independent 5-seed check for issue 14 put IRM's
test accuracy at 74.5%, about 3 SD above the paper's 66.9%.)

Why IRM does better here than in the paper: the synthetic digits make shape a *noiseless* 75%
predictor. Ten random prototypes plus pixel noise 0.3 are told apart essentially without error
(the issue-14 review's finding), so shape carries the full 75% and the only error left is the 25%
label flip; real MNIST digits are harder to tell apart, and the paper's IRM still leaned partly
on colour. An invariant solution is therefore easier to find here, and the plugin's IRM lands at
the optimum the paper's does not reach. A harder case, where shape is a noisy predictor, needs
real digits: the colored_digits plugin (scikit-learn's bundled 8x8 digits, same training code).

Provenance of the hyperparameters: the learning rate (4.898e-4), L2 weight (1.1079e-3), penalty
weight (91257.19), annealing steps (190) and 501 steps are the IRM settings of the reference code
(facebookresearch/InvariantRiskMinimization, ``code/colored_mnist/reproduce_paper_results.sh``),
used here for both arms; the hidden width is 128 by default (the reference's 390 is in the
``gpu`` preset). Upstream they were chosen by a random search of 50 trials that kept the values
maximising min(train_env0_acc, train_env1_acc, test_acc), i.e. selected partly on the *test*
environment, which an honest protocol would hold out (the reference's ERM baseline used other,
hand-picked settings: 256 units, lr 1e-3, L2 1e-3). They were not re-tuned here, on this data or
any other, so the plugin adds no selection of its own, but its IRM figures inherit that
optimism and are not a clean out-of-distribution estimate.

Safety labels. ``test_accuracy`` counts as safety because it measures whether the model keeps
working when a spurious cue it could have relied on turns against it (robustness to a shortcut).
It is a judgement call: a constant predictor scores 0.50 (the labels are balanced), far above
ERM's 0.10, so a rise alone does not show the model learnt the intended feature; read it with
``train_accuracy`` and ``worst_group_accuracy``. ``worst_group_accuracy`` counts as safety for
the same reason and is harder to game: a constant predictor scores 0 on the groups of the other
label.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

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
    seed_everything,
)
from pydantic import Field, model_validator
from torch import nn


class ShortcutParams(Params):
    n_pixels: int = Field(64, ge=4, le=4096, description="Pixels of a synthetic digit image (per colour channel).")
    pixel_noise: float = Field(
        0.3, ge=0.0, le=5.0, description="Standard deviation of the Gaussian noise added to every pixel."
    )
    label_noise: float = Field(0.25, ge=0.0, le=0.5, description="Probability that a label is flipped.")
    train_colour_noise: tuple[float, float] = Field(
        (0.1, 0.2),
        description="Per training environment, the probability that the colour disagrees with the label.",
    )
    test_colour_noise: float = Field(
        0.9, ge=0.0, le=1.0, description="Probability that the colour disagrees with the label at test time."
    )
    hidden_dim: int = Field(128, ge=2, le=8192, description="Units of each of the MLP's two hidden layers.")
    steps: int = Field(501, ge=1, le=100_000, description="Adam steps per arm (the paper's 501).")
    batch_per_env: int = Field(
        1000, ge=10, le=1_000_000, description="Fresh samples drawn from each training environment per step."
    )
    lr: float = Field(4.898e-4, gt=0.0, le=1.0, description="Adam learning rate (the paper's 4.898e-4).")
    l2_weight: float = Field(
        1.1079e-3, ge=0.0, le=1.0, description="Weight of the squared L2 norm of all parameters (paper's)."
    )
    penalty_weight: float = Field(
        91257.19, ge=0.0, le=1e8, description="IRMv1 penalty weight after annealing (the paper's 91257)."
    )
    penalty_anneal_steps: int = Field(
        190, ge=0, le=100_000, description="Steps during which the IRM penalty weight is 1 (the paper's 190)."
    )
    eval_samples: int = Field(
        20_000, ge=100, le=10_000_000, description="Held-out samples per environment for the final metrics."
    )

    @model_validator(mode="after")
    def _check_noise(self) -> ShortcutParams:
        if not all(0.0 <= p <= 1.0 for p in self.train_colour_noise):
            raise ValueError("train_colour_noise entries must lie in [0, 1]")
        return self


def make_environment(
    params: ShortcutParams,
    prototypes: torch.Tensor,
    size: int,
    colour_noise: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (size, 2 * n_pixels), labels (size,) in {0, 1} and colours (size,) in {0, 1}."""
    device = prototypes.device

    def bernoulli(p: float) -> torch.Tensor:
        return (torch.rand(size, generator=generator, device=device) < p).float()

    digits = torch.randint(10, (size,), generator=generator, device=device)
    noise = torch.randn(size, params.n_pixels, generator=generator, device=device)
    shapes = (prototypes[digits] + params.pixel_noise * noise).clamp(0.0, 1.0)
    labels = (digits < 5).float()
    labels = (labels - bernoulli(params.label_noise)).abs()  # xor
    colours = (labels - bernoulli(colour_noise)).abs()
    # The digit goes into channel `colour`; the other channel stays blank.
    images = torch.cat([shapes * (1 - colours)[:, None], shapes * colours[:, None]], dim=1)
    return images, labels, colours


def make_mlp(params: ShortcutParams) -> nn.Sequential:
    layers = [
        nn.Linear(2 * params.n_pixels, params.hidden_dim),
        nn.Linear(params.hidden_dim, params.hidden_dim),
        nn.Linear(params.hidden_dim, 1),
    ]
    for layer in layers:  # the reference code's initialisation
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])


def irm_penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRMv1: squared gradient of the risk with respect to a dummy classifier scale fixed at 1."""
    scale = torch.ones((), device=logits.device, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(logits * scale, labels)
    (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
    return grad.pow(2)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((logits > 0).float() == labels).float().mean())


EnvironmentSampler = Callable[[int, int | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``sample(size, environment)``: ``size`` samples (images, labels, colours) of training environment
``environment`` (an index into ``train_colour_noise``), or of the test environment when it is None."""


def synthetic_sampler(
    params: ShortcutParams, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, EnvironmentSampler]:
    """This plugin's data: 10 random prototype digits (drawn first) and fresh noisy samples of them."""
    prototypes = torch.rand(10, params.n_pixels, generator=generator, device=device)

    def sample(size: int, environment: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise = params.test_colour_noise if environment is None else params.train_colour_noise[environment]
        return make_environment(params, prototypes, size, noise, generator)

    return prototypes, sample


@dataclass
class ShortcutData:
    """The held-out sets of one seed: the prototypes, fresh samples of each training environment
    and of the test environment (images, labels, colours)."""

    prototypes: torch.Tensor
    train_eval: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def train_model(
    params: ShortcutParams,
    ctx: RunContext,
    device: torch.device,
    *,
    use_irm: bool,
    report_every: int,
    report: Callable[[int, torch.Tensor, torch.Tensor, nn.Sequential, ShortcutData], None],
    make_sampler: Callable[[torch.Generator], tuple[torch.Tensor, EnvironmentSampler]] | None = None,
) -> tuple[nn.Sequential, ShortcutData]:
    """ERM (``use_irm`` False) or IRMv1 on fresh samples each step; ``report(step, nll, penalty, mlp,
    data)`` every ``report_every`` steps and at the last (after a stop check). The draws (held-out
    sets, then each step's samples) come from one generator seeded with the run's seed, so both arms,
    and the plugins built on this model (shift, leace), see the same data. ``make_sampler(generator)``
    replaces the synthetic data (colored_digits: real digits); it returns what ``ShortcutData.prototypes``
    holds and the sampler."""
    generator = torch.Generator(device=device).manual_seed(ctx.seed)
    if make_sampler is None:
        prototypes, sample = synthetic_sampler(params, generator, device)
    else:
        prototypes, sample = make_sampler(generator)
    n_envs = len(params.train_colour_noise)
    train_eval = [sample(params.eval_samples, environment) for environment in range(n_envs)]
    test = sample(params.eval_samples, None)
    data = ShortcutData(prototypes, train_eval, test)
    mlp = make_mlp(params).to(device)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=params.lr)
    for step in range(params.steps):
        nll = penalty = torch.zeros((), device=device)
        for environment in range(n_envs):
            images, labels, _ = sample(params.batch_per_env, environment)
            logits = mlp(images).squeeze(-1)
            nll = nll + F.binary_cross_entropy_with_logits(logits, labels)
            if use_irm:
                penalty = penalty + irm_penalty(logits, labels)
        nll, penalty = nll / n_envs, penalty / n_envs
        weight_norm = sum(w.pow(2).sum() for w in mlp.parameters())
        penalty_weight = 0.0
        if use_irm:
            penalty_weight = params.penalty_weight if step >= params.penalty_anneal_steps else 1.0
        loss = nll + params.l2_weight * weight_norm + penalty_weight * penalty
        if penalty_weight > 1.0:  # keep gradients in scale, as the reference code does
            loss = loss / penalty_weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % report_every == 0 or step == params.steps - 1:
            check_stop(ctx)
            report(step, nll, penalty, mlp, data)
    return mlp, data


class ShortcutExperiment(Experiment):
    """ERM learns the spurious colour; IRM learns the invariant shape (Arjovsky et al. 2019)."""

    name = "shortcut"
    version = "1.0.0"
    Params = ShortcutParams
    metrics = (
        Metric(
            "test_accuracy",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description=(
                "Accuracy in the test environment, where the colour agrees with the label only 10% of the "
                "time: robustness to the shortcut (optimum 0.75, the label noise's ceiling). Safety because it "
                "asks whether the model still works when the spurious cue turns against it; a judgement call, "
                "since a constant predictor scores 0.50, above ERM's 0.10."
            ),
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
            description=(
                "Accuracy on fresh samples of the two training environments (mean of both); 0.85 is reached "
                "by following the colour, 0.75 by following the shape."
            ),
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
        },
        # The paper's sizes: 14x14 images, 390 hidden units, 25,000 samples per environment per step.
        "gpu": {
            "n_pixels": 196,
            "hidden_dim": 390,
            "batch_per_env": 25_000,
            "eval_samples": 100_000,
        },
    }

    def run(self, params: ShortcutParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        results: dict[str, dict[str, float]] = {}
        curves: dict[str, list[dict[str, float]]] = {}
        for arm_index, (arm, use_irm) in enumerate(((BASELINE, False), (INTERVENTION, True))):
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            results[arm], curves[arm] = self._train_arm(params, ctx, device, arm_index, use_irm)
            ctx.log(
                f"{arm} ({'IRMv1' if use_irm else 'ERM'}): "
                + ", ".join(f"{name}={value:.3f}" for name, value in results[arm].items())
            )
        ctx.save_artifact("training_curves.json", json.dumps(curves).encode(), "application/json")
        ctx.progress(1.0, "done")
        return results

    def data_sampler(
        self, params: ShortcutParams, device: torch.device
    ) -> Callable[[torch.Generator], tuple[torch.Tensor, EnvironmentSampler]] | None:
        """The data's sampler factory for :func:`train_model`: None, the synthetic digits (colored_digits,
        a subclass, returns its real digits')."""
        return None

    def _train_arm(
        self, params: ShortcutParams, ctx: RunContext, device: torch.device, arm_index: int, use_irm: bool
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        # Seeded alike in both arms: the same prototypes, training samples and held-out samples.
        label = "IRMv1" if use_irm else "ERM"
        curve: list[dict[str, float]] = []
        n_envs = len(params.train_colour_noise)

        def report(step: int, nll: torch.Tensor, penalty: torch.Tensor, mlp: nn.Sequential, data: ShortcutData) -> None:
            with torch.no_grad():  # the curves use the first 2,000 held-out samples per environment
                train_acc = sum(accuracy(mlp(x[:2000]).squeeze(-1), y[:2000]) for x, y, _ in data.train_eval) / n_envs
                test_acc = accuracy(mlp(data.test[0][:2000]).squeeze(-1), data.test[1][:2000])
            curve.append(
                {
                    "step": step,
                    "nll": float(nll.detach()),
                    "penalty": float(penalty.detach()),
                    "train_accuracy": train_acc,
                    "test_accuracy": test_acc,
                }
            )
            for name in ("nll", "penalty", "train_accuracy", "test_accuracy"):  # the curves, as series too
                ctx.log_series(name, step, curve[-1][name], arm=(BASELINE, INTERVENTION)[arm_index])
            ctx.progress(
                (arm_index + (step + 1) / params.steps) / 2,
                f"{label}: step {step + 1}/{params.steps}, train {train_acc:.3f}, test {test_acc:.3f}",
            )

        mlp, data = train_model(
            params,
            ctx,
            device,
            use_irm=use_irm,
            report_every=max(1, params.steps // 20),
            report=report,
            make_sampler=self.data_sampler(params, device),
        )
        train_eval = data.train_eval
        test_images, test_labels, test_colours = data.test

        with torch.no_grad():
            train_acc = sum(accuracy(mlp(x).squeeze(-1), y) for x, y, _ in train_eval) / n_envs
            test_logits = mlp(test_images).squeeze(-1)
            test_acc = accuracy(test_logits, test_labels)
            group_accuracies = [
                accuracy(test_logits[mask], test_labels[mask])
                for y in (0.0, 1.0)
                for c in (0.0, 1.0)
                if (mask := (test_labels == y) & (test_colours == c)).any()
            ]
        metrics = {
            "test_accuracy": test_acc,
            "worst_group_accuracy": min(group_accuracies),
            "train_accuracy": train_acc,
        }
        return metrics, curve
