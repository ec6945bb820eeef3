"""Grokking: weight decay turns memorisation of modular addition into a sparse Fourier algorithm.

Reproduces Power, Burda, Edwards, Babuschkin & Misra, *Grokking: Generalization beyond
overfitting on small algorithmic datasets* (arXiv:2201.02177, 2022), and the Fourier analysis of
Nanda, Chan, Lieberum, Smith & Steinhardt, *Progress measures for grokking via mechanistic
interpretability* (ICLR 2023, arXiv:2301.05217).

Task: (a + b) mod p for every pair of residues; a random ``train_fraction`` of the p**2 pairs is
the training set, the rest the test set. Model: a learned token embedding shared by a and b, the
two embeddings concatenated, one hidden ReLU layer, logits over the p residues (a transformer is
too slow for a CPU minute). Full-batch AdamW (betas 0.9, 0.98 as in Nanda et al.).

Arms (same seed, same split, same initialisation, same budget):

- ``baseline``: weight decay 0.
- ``intervention``: weight decay ``weight_decay`` (1.0 by default, as in Nanda et al.).

Metrics: ``fourier_sparsity`` and ``test_accuracy`` are proportions in [0, 1];
``steps_to_test_99`` and ``steps_to_train_99`` are times to an event (ratio scale). When the
accuracy never reaches 99% within the ``steps`` budget the run reports them as not reached
(``NotReached``, stored censored at the budget), never as the budget itself: without weight decay
test accuracy never gets there, so the baseline's ``steps_to_test_99`` is censored and the effect
can only say that weight decay is *at least* so much faster.

The papers' figures to approach: training accuracy reaches 100% early while test accuracy stays
at chance, then, with weight decay, test accuracy jumps to ~100% long after memorisation (Power et
al., Fig. 1; Nanda et al.'s transformer memorises by ~1.4k epochs and has generalised by ~10k);
without weight decay it does not generalise in the same budget (Power et al., Fig. 2: weight
decay is the intervention that helps generalisation most). The grokked embedding is sparse in the Fourier basis over the
residues, concentrated on a handful of key frequencies (Nanda et al. find 5 for p = 113).

Reproduced figures. Measured with the current code (plugin 1.1.0), default parameters (p = 59),
one CPU thread, seeds 0-4, by ``python bench/plugin_times.py --seeds 5`` (2026-12-04, the 2-core
AMD EPYC development machine; 14-16 s of CPU per seed for both arms; every seed's values in
``bench/results/builtins_default.json``): both arms reach 99% training accuracy at step 60 on
every seed. With weight decay 1, test accuracy reaches 99% at step 960 +/- 120 (1,140 / 1,020 /
940 / 820 / 880; 14-19 times later than memorisation) and is 1.000 at the end of the 2,000-step
budget on every seed; without weight decay it stays at chance (0.0016 +/- 0.0017) and
steps_to_test_99 is not reached on any seed (censored at 2,000). The top-5 Fourier share is
0.645 +/- 0.060 with weight decay (0.641 / 0.576 / 0.627 / 0.642 / 0.741) against 0.240 +/-
0.014 without (a random embedding's level): four of five seeds sit below the reference's
0.65-0.70. Earlier figures in this docstring (seeds 0-2: steps 940-1,140, top-5 share 0.58-0.64;
seed 0 alone in session 17: step 1,160, share 0.588) were taken on other machines; float-level
differences between CPUs move the step at which 99% is first crossed by one or two evaluation
intervals (likely, not proven: the plugin version was the same, 1.1.0). So the
qualitative figures (late generalisation; a more concentrated spectrum; none of it without
weight decay) are reproduced; the time scales are shorter than the papers' (a smaller task, an
MLP and a larger learning rate).

What ``fourier_sparsity`` is, and is not. It is a proxy: the share of the embedding's power held
by its ``top_k_frequencies`` (5) strongest frequencies. Nanda et al. identify the key
frequencies from the mechanism and check them with restricted and excluded losses; this metric
does neither. The grokked MLP's spectrum has about 7 comparable peaks rather than Nanda et al.'s
5, so a top-5 share near 0.6 means "concentrated" rather than "exactly 5 key frequencies", and it
is not comparable across values of ``top_k_frequencies`` or p. The name is kept (renaming would
split the stored data and the example finding's claims); the description says what it measures.

Safety axis, a judgement call: ``fourier_sparsity`` is labelled safety because a spectrum
concentrated on a few frequencies is the signature of the known, human-readable algorithm, so a
higher value suggests a model whose computation can be audited. It is a proxy of a proxy: it
measures concentration of the embedding, not that the model uses the trigonometric algorithm.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    Experiment,
    Metric,
    NotReached,
    Params,
    Resources,
    RunContext,
    Scale,
    check_stop,
    seed_everything,
)
from pydantic import Field, model_validator

ACCURACY_TARGET = 0.99
CURVE_POINTS = 200  # at most about this many points per logged curve


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % divisor for divisor in range(2, int(n**0.5) + 1))


class GrokkingParams(Params):
    modulus: int = Field(59, ge=5, le=211, description="The prime p of the task (a + b) mod p.")
    train_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="Share of the p**2 pairs used for training; the rest is the test set."
    )
    embed_dim: int = Field(64, ge=2, le=4096, description="Width of the token embedding.")
    hidden_dim: int = Field(128, ge=2, le=16384, description="Width of the hidden ReLU layer.")
    steps: int = Field(2000, ge=1, le=1_000_000, description="Full-batch AdamW steps per arm.")
    learning_rate: float = Field(5e-3, gt=0.0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(
        1.0, gt=0.0, le=100.0, description="AdamW weight decay of the intervention arm (the baseline uses 0)."
    )
    eval_every: int = Field(
        20, ge=1, le=100_000, description="Steps between accuracy evaluations (the resolution of steps_to_*)."
    )
    top_k_frequencies: int = Field(5, ge=1, le=105, description="How many Fourier frequencies fourier_sparsity counts.")

    @model_validator(mode="after")
    def _check(self) -> GrokkingParams:
        if not _is_prime(self.modulus):
            raise ValueError("modulus must be a prime")
        if self.top_k_frequencies >= self.modulus // 2:
            raise ValueError(f"top_k_frequencies must be below the {self.modulus // 2} frequencies of p")
        n_train = round(self.train_fraction * self.modulus**2)
        if not 0 < n_train < self.modulus**2:
            raise ValueError("train_fraction leaves the training or the test set empty")
        return self


class ModularAdditionMLP(torch.nn.Module):
    def __init__(self, modulus: int, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(modulus, embed_dim)
        self.hidden = torch.nn.Linear(2 * embed_dim, hidden_dim)
        self.unembed = torch.nn.Linear(hidden_dim, modulus)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.embed(a), self.embed(b)], dim=-1)
        return self.unembed(F.relu(self.hidden(x)))


def fourier_power(embedding: torch.Tensor) -> torch.Tensor:
    """Power of a (p, d) embedding at each non-constant frequency 1..p//2 of the residues.

    For odd p, frequencies k and p - k have equal power, so each pair is counted once.
    """
    return torch.fft.rfft(embedding.float(), dim=0).abs().pow(2).sum(dim=1)[1:]


def _event_time(step: int | None, budget: int) -> float | NotReached:
    """The step at which an event happened, or NotReached (censored at the budget) when it did not."""
    return NotReached(budget=float(budget)) if step is None else float(step)


def top_k_share(power: torch.Tensor, k: int) -> float:
    return float(power.sort(descending=True).values[:k].sum() / power.sum())


def modular_addition_split(modulus: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Every pair (a, b), labels (a + b) mod p, and the training mask drawn from ``seed`` with a CPU
    generator: identical for both arms and on every device."""
    a, b = torch.cartesian_prod(torch.arange(modulus), torch.arange(modulus)).T
    labels = (a + b) % modulus
    order = torch.randperm(modulus * modulus, generator=torch.Generator().manual_seed(seed))
    is_train = torch.zeros(modulus * modulus, dtype=torch.bool)
    is_train[order[: round(train_fraction * modulus * modulus)]] = True
    return a, b, labels, is_train


class GrokkingExperiment(Experiment):
    """Does weight decay make a memorising network generalise, with a sparse Fourier solution?"""

    name = "grokking"
    version = "1.1.0"
    Params = GrokkingParams
    metrics = (
        Metric(
            "fourier_sparsity",
            Axis.SAFETY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="A proxy for a Fourier solution (the name is historical): the share of the token "
            "embedding's non-constant Fourier power (over the residues) held by its top_k_frequencies "
            "strongest frequencies (about 0.25 for a random embedding at p = 59, k = 5; the grokked "
            "spectrum has ~7 comparable peaks, so ~0.6 at k = 5). Not Nanda et al.'s restricted or "
            "excluded loss. Safety, a judgement call: concentration on a few frequencies is the "
            "signature of the known, auditable algorithm, but this measures concentration only.",
        ),
        Metric(
            "test_accuracy",
            Axis.CAPABILITY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Accuracy on the held-out pairs at the end of training.",
        ),
        Metric(
            "steps_to_test_99",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="steps",
            description="First evaluated step with test accuracy >= 99%; censored at the step budget "
            "(steps) when it is never reached (version 1 stored the budget as if it were the value).",
            version=2,
            scale=Scale.RATIO,
            time_to_event=True,
        ),
        Metric(
            "steps_to_train_99",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="steps",
            description="First evaluated step with training accuracy >= 99%; censored at the step "
            "budget (steps) when it is never reached (version 1 stored the budget as if it were the value).",
            version=2,
            scale=Scale.RATIO,
            time_to_event=True,
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {
            "modulus": 31,
            "train_fraction": 0.6,
            "embed_dim": 32,
            "hidden_dim": 64,
            "steps": 800,
            "learning_rate": 1e-2,
            "eval_every": 25,
        },
        # Nanda et al.'s task size: p = 113 with 30% of the pairs for training. Not run on a GPU yet; on
        # the CPU, p = 113 / 30% with embed_dim 64, hidden_dim 256 reached 99% test accuracy at step 2000.
        "gpu": {
            "modulus": 113,
            "train_fraction": 0.3,
            "embed_dim": 128,
            "hidden_dim": 512,
            "steps": 10000,
            "learning_rate": 5e-3,
            "eval_every": 50,
        },
    }

    def run(self, params: GrokkingParams, ctx: RunContext) -> dict[str, dict[str, float | NotReached]]:
        device = torch.device(ctx.device)
        p = params.modulus
        a, b, labels, is_train = modular_addition_split(p, params.train_fraction, ctx.seed)
        a, b, labels, is_train = a.to(device), b.to(device), labels.to(device), is_train.to(device)
        train_a, train_b, train_labels = a[is_train], b[is_train], labels[is_train]
        ctx.log(f"(a + b) mod {p}: {int(is_train.sum())} training pairs, {int((~is_train).sum())} test pairs")

        results: dict[str, dict[str, float | NotReached]] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        for arm_index, (arm, weight_decay) in enumerate(((BASELINE, 0.0), (INTERVENTION, params.weight_decay))):
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            # Built on the CPU then moved, so the initialisation does not depend on the device.
            model = ModularAdditionMLP(p, params.embed_dim, params.hidden_dim).to(device)
            optimiser = torch.optim.AdamW(
                model.parameters(), lr=params.learning_rate, weight_decay=weight_decay, betas=(0.9, 0.98)
            )
            curve: dict[str, list[float]] = {"step": [], "train_accuracy": [], "test_accuracy": [], "train_loss": []}
            reached: dict[str, int | None] = {"train": None, "test": None}
            train_accuracy = test_accuracy = 0.0
            # the curves (ctx.log_series): every evaluation, thinned to at most ~200 points per series
            log_every = max(1, -(-(params.steps // params.eval_every) // CURVE_POINTS))
            evaluations = 0
            for step in range(1, params.steps + 1):
                loss = F.cross_entropy(model(train_a, train_b), train_labels)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if step % params.eval_every == 0 or step == params.steps:
                    with torch.no_grad():
                        correct = model(a, b).argmax(dim=-1) == labels
                    train_accuracy = float(correct[is_train].float().mean())
                    test_accuracy = float(correct[~is_train].float().mean())
                    for split, accuracy in (("train", train_accuracy), ("test", test_accuracy)):
                        if reached[split] is None and accuracy >= ACCURACY_TARGET:
                            reached[split] = step
                    curve["step"].append(step)
                    curve["train_accuracy"].append(train_accuracy)
                    curve["test_accuracy"].append(test_accuracy)
                    curve["train_loss"].append(float(loss.detach()))
                    if evaluations % log_every == 0 or step == params.steps:
                        ctx.log_series("train_accuracy", step, train_accuracy, arm=arm)
                        ctx.log_series("test_accuracy", step, test_accuracy, arm=arm)
                        if math.isfinite(curve["train_loss"][-1]):  # a diverged loss is no curve point
                            ctx.log_series("train_loss", step, curve["train_loss"][-1], arm=arm)
                    evaluations += 1
                    check_stop(ctx)
                    ctx.progress(
                        (arm_index + step / params.steps) / 2,
                        f"{arm}: step {step}/{params.steps}, train {train_accuracy:.2f}, test {test_accuracy:.2f}",
                    )

            power = fourier_power(model.embed.weight.detach())
            results[arm] = {
                "fourier_sparsity": top_k_share(power, params.top_k_frequencies),
                "test_accuracy": test_accuracy,
                "steps_to_test_99": _event_time(reached["test"], params.steps),
                "steps_to_train_99": _event_time(reached["train"], params.steps),
            }
            curve["fourier_power"] = [float(x) for x in power / power.sum()]
            curves[arm] = curve
            ctx.log(
                f"{arm} (weight decay {weight_decay:g}): train 99% at step {reached['train']}, "
                f"test 99% at step {reached['test']}, final test accuracy {test_accuracy:.3f}, "
                f"top-{params.top_k_frequencies} Fourier share {results[arm]['fourier_sparsity']:.3f}"
            )

        ctx.save_artifact("curves.json", json.dumps(curves).encode(), "application/json")
        return results
