"""Grokking from its mechanism: Grokfast-EMA or a Fourier-initialised embedding against weight decay alone,
with Nanda et al.'s progress measures.

Papers: Jaerin Lee, Bong Gyun Kang, Kihoon Kim & Kyoung Mu Lee, *Grokfast: Accelerated Grokking
by Amplifying Slow Gradients* (arXiv:2405.20233, 2024), and Neel Nanda, Lawrence Chan, Tom
Lieberum, Jess Smith & Jacob Steinhardt, *Progress measures for grokking via mechanistic
interpretability* (ICLR 2023, arXiv:2301.05217).

Lee et al. read the training dynamics of grokking as a signal: the fast-varying part of the
gradient drives memorisation, the slow-varying part drives generalisation. Grokfast-EMA keeps an
exponential moving average of every parameter's gradient, ``mu = alpha * mu + (1 - alpha) * g``,
and adds ``lambda * mu`` to the gradient before the optimiser step (defaults alpha = 0.98,
lambda = 2.0). They report test accuracy reaching its plateau up to ~50 times sooner on modular
arithmetic (their Fig. 1, a transformer on (a * b) mod 97), with weight decay kept. Nanda et al.
reverse-engineered the grokked network (a few key Fourier frequencies, trigonometric identities)
and defined two progress measures: the *restricted loss* (the logits with only the key
frequencies' components kept) and the *excluded loss* (those components removed), which show the
generalising circuit forming before test accuracy moves.

Task, model, data split and optimiser are exactly the grokking plugin's (imported from
``plugins.grokking.experiment``): (a + b) mod p, a learned embedding shared by a and b, one hidden
ReLU layer, full-batch AdamW with betas (0.9, 0.98), the split drawn from the seed.

Arms (same seed, same split, same initialisation, same budget, both with weight decay
``weight_decay``); ``intervention_arm`` picks what the intervention is, ``baseline_arm`` the baseline:

- ``baseline`` with ``baseline_arm="default_init"`` (the default): the grokking recipe, weight decay
  alone, from the default initialisation.
- ``baseline`` with ``baseline_arm="shuffled_fourier"`` (added in 1.2.0; only with
  ``intervention_arm="fourier_init"``, whose control it is): weight decay alone from the
  ``fourier_init`` embedding with its rows (the residues) permuted by a permutation drawn from the
  seed (``draw_residue_permutation``): the same values, column norms and total norm, the same
  frequencies, but no longer waves over the residues' arithmetic.
- ``intervention`` with ``intervention_arm="grokfast"`` (the default): the same plus Grokfast-EMA
  (``grokfast_alpha``, ``grokfast_lambda``).
- ``intervention`` with ``intervention_arm="fourier_init"`` (added in 1.1.0): exactly the baseline's
  training (no Grokfast-EMA; ``grokfast_alpha`` and ``grokfast_lambda`` are unused), from an
  initialisation that differs only in the token embedding's first ``2 * fourier_init_frequencies``
  columns. The embedding's rows are the tokens x = 0..p-1; column 2j is sqrt(2) cos(2 pi k_j x / p)
  and column 2j + 1 is sqrt(2) sin(2 pi k_j x / p) (the sqrt(2) gives each wave the mean square of a
  default N(0, 1) column), for ``fourier_init_frequencies`` distinct frequencies k_j drawn among
  1..p//2 by a CPU generator seeded with the run's seed (``draw_fourier_frequencies``). The other
  columns keep the default random values of the same seed, rather than zeros, so that the arm
  differs from the baseline in the wave columns only and the rest of the embedding has the same
  capacity and symmetry breaking; then the whole embedding is rescaled to the default
  initialisation's Frobenius norm (a factor ~1.0), so only its direction differs, not its size
  (weight decay and Adam's step size see the same scale).

Why ``fourier_init`` is derived from the mechanism. Nanda et al. found that the grokked network
embeds each token x as cos(w_k x) and sin(w_k x) for a few key frequencies w_k = 2 pi k / p, and
computes (a + b) mod p from them with trigonometric identities. The intervention puts that *form*
into the embedding at the start: a few waves of the residues. It does not use the *answer*: the
frequencies are drawn from the seed, not read off a trained model (any frequency serves, since for
prime p each one generates the group), and the hidden and output layers, which must learn the
identities, keep their default initialisation. Grokfast, by contrast, is derived from the training
dynamics (slow against fast gradient components), not from the circuit.

Progress measures. The key frequencies are the ``top_k_frequencies`` frequencies of the arm's
*final* token embedding with the most Fourier power (the grokking plugin's ``fourier_power``);
Nanda et al. likewise fix the final model's key frequencies for every checkpoint. With the
logits L over all p**2 pairs, for each key frequency k the components of L along cos(2 pi k
(a + b) / p) and sin(2 pi k (a + b) / p) (as functions of the pair, one projection per output
class) form P. ``restricted_loss`` is the cross-entropy of mean(L) + P over all p**2 pairs;
``excluded_loss`` is the cross-entropy of L - P on the training pairs (as in Nanda et al.,
Section 5.1). They are computed after training from snapshots of the weights at the logged
evaluation steps, and logged as series (with train/test accuracy and training loss, at most ~200
points each).

Metrics:

- ``steps_to_test_99`` (capability, time to an event): first evaluated step with test accuracy
  >= 99%; ``NotReached`` (censored at the budget) when the budget ends first.
- ``test_accuracy`` (capability): held-out accuracy at the end.
- ``restricted_loss`` (safety, a judgement call): why this safety label: a low restricted loss
  means the model's output is carried by a handful of known Fourier components, i.e. by the
  human-readable algorithm, so its computation can be audited; it is a judgement call because it
  measures how much of the output those components explain, not that nothing else is computed.
- ``excluded_loss`` (diagnostic): high when the training fit depends on the key frequencies
  rather than on memorisation.
- ``steps_to_train_99`` (diagnostic, time to an event): memorisation time.

Reproduced figures (plugin 1.0.0, session of issue 14; one CPU thread on a shared 2-core
machine; mean +/- SD over seeds 0-4; "alone" = weight decay alone, "Grokfast" = plus Grokfast-EMA
at the paper's alpha = 0.98, lambda = 2):

* Default parameters (p = 59, 2,000 steps; re-measured in session 20 with
  ``bench/plugin_times.py --seeds 5``, still version 1.0.0): 99% test accuracy at step 952 +/- 138
  alone (1,160 / 1,020 / 900 / 820 / 860) and 1,512 +/- 110 with Grokfast (1,560 / 1,480 / 1,500 /
  1,360 / 1,660): Grokfast is *later* on every seed, about 1.6 times. Final test accuracy 1.000
  in both arms on every seed; memorisation (99% training accuracy) at step 60 alone, 80 with
  Grokfast. Restricted loss 0.0046 +/- 0.0058 alone, 0.0030 +/- 0.0009 with Grokfast (chance is
  ln 59 = 4.08); excluded loss 0.50 +/- 0.31 alone, 0.25 +/- 0.14 with Grokfast. (The first
  measurement, issue 14, gave 960 +/- 125 and 1,496 +/- 98 steps, restricted loss 0.0027 alone
  and 0.0055 with Grokfast, excluded loss 0.62 and 0.24: the same direction, other per-seed values.)
  Re-measured with plugin 1.1.0 on 2026-12-04 (``bench/plugin_times.py --seeds 5`` on the 2-core
  AMD EPYC machine; 13-16 s CPU per seed): 960 +/- 125 alone (1,140 / 1,020 / 940 / 820 / 880)
  and 1,496 +/- 98 with Grokfast (1,540 / 1,460 / 1,460 / 1,380 / 1,640), restricted loss 0.0027 and
  0.0055, excluded loss 0.62 and 0.24: issue 14's first figures exactly. Session 20's were taken on
  an Intel Xeon; the per-seed steps depend on the CPU's floating-point kernels, not on the code.
* Tiny preset (p = 31; measured at 1,500 steps, raised to 2,000 since: seed 0 reached 99% at
  1,575): 1,210 +/- 185 alone against 1,300 +/- 149 with Grokfast
  on the 4 seeds where it was reached (seed 0 not reached in the budget; final test accuracy
  0.996 +/- 0.004 against 0.970 +/- 0.062). On the baseline's curves the restricted loss falls
  below 0.5 nats at steps 250-475, before test accuracy passes 50% (steps 450-700), as Nanda et
  al. report: the progress measure sees the circuit before test accuracy moves (the restricted
  loss is taken over all p**2 pairs, as a measure of the mechanism, so it includes the test pairs).
* Wall time per seed, both arms: 41-47 s when the machine was quiet (the grokking plugin took
  35 s at the same moment); 65-103 s while other jobs shared the two cores; 24-35 s in session
  20 (load average 3-8). Tiny: 9-16 s.

* Tiny preset again in plugin 1.1.0 (grokfast arm unchanged; this session's machine, an otherwise
  quiet 2-core AMD EPYC, one thread, whose numerics give other per-seed steps than the figures
  above): seeds 0-2, 99% test accuracy at 1,475 / 975 / 1,200 alone (1,217 +/- 250) and 1,750 /
  1,175 / 1,325 with Grokfast (1,417 +/- 298): later on all three, none censored. Final test
  accuracy 1.000 in both arms; restricted loss 3.4e-5 +/- 2.7e-5 alone, 2.0e-4 +/- 2.9e-4 with
  Grokfast; excluded loss 1.90 +/- 0.08 alone, 1.46 +/- 0.58 with Grokfast; 99% training accuracy at
  step 50 alone, 75 with Grokfast. 2.4-3.4 s CPU (``time.process_time``) per seed, both arms.

So the paper's direction is **not reproduced** here: Grokfast-EMA on top of weight decay 1 delays
generalisation in this MLP under full-batch AdamW. Exploratory tiny runs (2 seeds, nothing tuned
into the defaults) found no setting that helped consistently: lambda 0.2-1.0, alpha 0.8-0.9,
lower learning rates and weight decay 0.1-0.3 each gave mixed or worse times. Likely reasons,
not tested: Adam normalises the amplified gradient, so Grokfast only changes its direction (a
long extra momentum), and weight decay 1 already makes this model grok within ~1,000 steps; the
paper's largest gains are on a transformer whose baseline grokks far later. Grokfast-MA (the
windowed variant) is not implemented.

Measured figures of ``intervention_arm="fourier_init"`` (plugin 1.1.0; the same quiet machine as the
1.1.0 tiny Grokfast figures above; ``run_locally`` with ``torch.set_num_threads(1)``, ``nice -n 5``;
mean +/- sample SD; no seed was censored, every arm of every seed reached 99% test accuracy):

* Default parameters (p = 59, 5 frequencies), seeds 0-4: 99% test accuracy at step 960 +/- 125
  alone (1,140 / 1,020 / 940 / 820 / 880) and 668 +/- 168 with the Fourier embedding (920 / 760 /
  520 / 560 / 580): sooner on every seed, by 19-45% (30% on the means). Final test accuracy 1.000 in both
  arms on every seed; memorisation at step 60 in both. Restricted loss 0.0027 +/- 0.0027 alone,
  0.000095 +/- 0.000090 with the Fourier embedding; excluded loss 0.62 +/- 0.36 alone, 1.90 +/- 0.44
  with it (the training fit leans more on the key frequencies). 13.8-15.9 s CPU per seed, both arms
  (14.5-16.3 s in ``bench/plugin_times.py --seeds 5`` with the same values, at load 3.3-3.7).
  Seeds 5-9 (extra, same direction): 1,000 / 800 / 1,220 / 760 / 1,060 alone against 720 / 580 /
  420 / 580 / 700; over seeds 0-9, 964 +/- 152 against 634 +/- 142, sooner on 10 of 10.
* Tiny preset (p = 31), seeds 0-2: 1,475 / 975 / 1,200 alone (1,217 +/- 250) against 475 / 1,025 /
  625 with the Fourier embedding (708 +/- 284): sooner on seeds 0 and 2, *later* on seed 1. Final
  test accuracy 1.000 in both arms; restricted loss 3.4e-5 +/- 2.7e-5 alone, 2.2e-5 +/- 2.4e-5 with
  it; excluded loss 1.90 +/- 0.08 alone, 2.00 +/- 0.52 with it; memorisation at step 50 in both.
  2.4-3.3 s CPU per seed. Seeds 3-9 (extra): 1,275 / 1,125 / 1,050 / 775 / 875 / 725 / 975 alone
  against 450 / 375 / 625 / 375 / 400 / 825 / 675, later on seed 8; over seeds 0-9, 1,045 +/- 231
  against 585 +/- 215, sooner on 8 of 10. No direction is asserted on the tiny preset for that reason.
* The frequencies stay: on every default and tiny seed (0-9 each) at least 3 of the 5 key
  frequencies of the final embedding (those the progress measures use) are among the 5 drawn at
  initialisation (4 or 5 on 19 of the 20 runs).
* The control, ``baseline_arm="shuffled_fourier"`` (plugin 1.2.0, 2026-12-04, ``bench/plugin_times.py
  --seeds 8 --plugins grokfast --params '{"intervention_arm": "fourier_init", "baseline_arm":
  "shuffled_fourier"}'``, 13-18 s CPU per seed): the same waves over shuffled residues reach 99% at
  960 / 1,100 / 920 / 1,080 / 1,040 / 760 / 1,080 / 880 (977.5 +/- 120, seeds 0-7), the default
  initialisation at 1,140 / 1,020 / 940 / 820 / 880 / 1,000 / 800 / 1,220 (977.5 +/- 149, the same
  mean), the Fourier form at 920 / 760 / 520 / 560 / 580 / 720 / 580 / 420 (632.5 +/- 158): sooner
  than both on every seed. So the speed-up comes from the Fourier form over the residues, not from
  a structured or lower-entropy embedding as such. (An earlier throw-away check with one fixed
  permutation for every seed gave 960 +/- 57 on seeds 0-4, likewise no speed-up.) The 1.1.0 and
  1.2.0 arms ``default_init``, ``grokfast`` and ``fourier_init`` give identical results (``==``,
  seeds 0-6).

So the mechanism-derived intervention does what Grokfast does not here: it makes the same recipe
generalise about 30% sooner at the defaults, consistently across seeds, while the cheaper tiny
preset shows the same mean effect with two reversed seeds in ten. A reading, not tested: it is a
head start rather than a change of the dynamics (the embedding begins in the form of Nanda et al.'s
circuit, but the hidden and output layers still have to learn the trigonometric identities, which
takes most of the remaining steps).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Literal

import torch
import torch.nn.functional as F
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    Experiment,
    Metric,
    NotReached,
    Resources,
    RunContext,
    Scale,
    check_stop,
    seed_everything,
)
from pydantic import Field, model_validator

from plugins.grokking.experiment import (
    ACCURACY_TARGET,
    CURVE_POINTS,
    GrokkingParams,
    ModularAdditionMLP,
    _event_time,
    fourier_power,
    modular_addition_split,
)


class GrokfastParams(GrokkingParams):
    weight_decay: float = Field(
        1.0, gt=0.0, le=100.0, description="AdamW weight decay of both arms (the grokking recipe)."
    )
    grokfast_alpha: float = Field(
        0.98, ge=0.0, lt=1.0, description="Grokfast-EMA momentum alpha of the gradient average (Lee et al.: 0.98)."
    )
    grokfast_lambda: float = Field(
        2.0, gt=0.0, le=100.0, description="Grokfast-EMA amplification lambda of the slow gradient (Lee et al.: 2.0)."
    )
    intervention_arm: Literal["grokfast", "fourier_init"] = Field(
        "grokfast",
        description="The arm stored as 'intervention' (the baseline is always weight decay alone): grokfast "
        "(default) adds Grokfast-EMA (grokfast_alpha, grokfast_lambda) to the gradients; fourier_init trains "
        "exactly like the baseline (no Grokfast-EMA) from a token embedding whose first "
        "2 * fourier_init_frequencies dimensions are cos/sin(2 pi k x / p) waves at frequencies drawn from "
        "the seed (Nanda et al.'s mechanism's form), rescaled to the default initialisation's norm.",
    )
    baseline_arm: Literal["default_init", "shuffled_fourier"] = Field(
        "default_init",
        description="The arm stored as 'baseline' (always weight decay alone, no Grokfast-EMA): default_init "
        "(default) from the default initialisation; shuffled_fourier, the control of intervention_arm="
        "fourier_init: the same waves at the same frequencies and the same norm, with the residues (the "
        "embedding's rows) permuted by a permutation drawn from the seed, so the values are kept and the "
        "waves over the residues' arithmetic are not.",
    )
    fourier_init_frequencies: int = Field(
        5,
        ge=1,
        le=105,
        description="fourier_init arm: how many frequencies k (drawn from the seed among 1..p//2) put a "
        "cos and a sin wave into the first 2 * fourier_init_frequencies embedding dimensions.",
    )

    @model_validator(mode="after")
    def _check_fourier_init(self) -> GrokfastParams:
        if self.baseline_arm == "shuffled_fourier" and self.intervention_arm != "fourier_init":
            raise ValueError("baseline_arm=shuffled_fourier is the control of intervention_arm=fourier_init")
        if self.intervention_arm != "fourier_init":  # unused by the grokfast arm: no limit on its embed_dim
            return self
        if self.fourier_init_frequencies > self.modulus // 2:
            raise ValueError(f"fourier_init_frequencies must be at most the {self.modulus // 2} frequencies of p")
        if 2 * self.fourier_init_frequencies > self.embed_dim:
            raise ValueError("fourier_init_frequencies needs 2 embedding dimensions per frequency (embed_dim)")
        return self


def grokfast_ema(
    model: torch.nn.Module, averages: dict[str, torch.Tensor] | None, alpha: float, lamb: float
) -> dict[str, torch.Tensor]:
    """Lee et al.'s Grokfast-EMA filter, applied in place to the gradients after ``backward()``.

    mu <- alpha * mu + (1 - alpha) * g (mu starts at the first gradient, as in the paper's code),
    then g <- g + lamb * mu. Returns the updated averages, to pass back at the next step.
    """
    if averages is None:
        averages = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        averages[name].mul_(alpha).add_(param.grad.detach(), alpha=1 - alpha)
        param.grad.add_(averages[name], alpha=lamb)
    return averages


def draw_fourier_frequencies(modulus: int, count: int, seed: int) -> list[int]:
    """``count`` distinct frequencies among 1..p//2, drawn from ``seed`` with a CPU generator of their own.

    Only the seed decides them, never a trained model: the intervention uses the mechanism's form
    (a few Fourier frequencies), not its answer (which frequencies a trained model picks). A separate
    generator leaves the global random stream, hence every other initial weight, as the baseline's.
    """
    generator = torch.Generator().manual_seed(seed)
    return sorted(int(i) + 1 for i in torch.randperm(modulus // 2, generator=generator)[:count])


def draw_residue_permutation(modulus: int, seed: int) -> list[int]:
    """A permutation of the residues 0..p-1 drawn from ``seed`` (a generator of its own, apart from the
    frequencies'), for the shuffled control: row x of its embedding holds the waves of residue perm[x].

    Never affine (x -> a x + b mod p): that would turn a wave at frequency k into one at a k, still a
    Fourier form. Drawn again until it is not (only small primes ever draw one: p = 5 often, p = 7
    rarely, p >= 31 in none of 200 seeds)."""
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    while True:
        permutation = [int(i) for i in torch.randperm(modulus, generator=generator)]
        if not _is_affine(permutation, modulus):
            return permutation


def _is_affine(permutation: list[int], modulus: int) -> bool:
    offset, slope = permutation[0], (permutation[1] - permutation[0]) % modulus
    return all(value == (slope * x + offset) % modulus for x, value in enumerate(permutation))


def fourier_embedding_init(
    embedding: torch.Tensor, frequencies: list[int], permutation: list[int] | None = None
) -> torch.Tensor:
    """A (p, d) token embedding whose first 2 * len(frequencies) columns are Fourier waves over the residues.

    Column 2j is sqrt(2) cos(2 pi k_j x / p) and column 2j + 1 is sqrt(2) sin(2 pi k_j x / p) for token
    x = 0..p-1 (the embedding's rows are tokens): the form Nanda et al. read off grokked embeddings.
    The sqrt(2) gives each wave the mean square of a default N(0, 1) column. The remaining columns keep
    ``embedding``'s own (default, random) values, so the arm differs from the baseline only in the
    wave columns; the result is rescaled to ``embedding``'s Frobenius norm, so only the direction of
    the initial embedding changes, not its size. With ``permutation`` (the shuffled control), row x gets
    the waves of residue ``permutation[x]``: the same values and norm, no longer waves over x.
    """
    modulus, width = embedding.shape
    if 2 * len(frequencies) > width:
        raise ValueError(f"{len(frequencies)} frequencies need {2 * len(frequencies)} embedding columns, not {width}")
    tokens = torch.arange(modulus, dtype=torch.float64)
    if permutation is not None:
        if sorted(permutation) != list(range(modulus)):
            raise ValueError(f"not a permutation of the {modulus} residues")
        tokens = torch.tensor(permutation, dtype=torch.float64)
    initialised = embedding.detach().to(torch.float64).clone()
    for j, k in enumerate(frequencies):
        angle = 2 * math.pi * k * tokens / modulus
        initialised[:, 2 * j] = math.sqrt(2) * torch.cos(angle)
        initialised[:, 2 * j + 1] = math.sqrt(2) * torch.sin(angle)
    initialised *= embedding.detach().to(torch.float64).norm() / initialised.norm()
    return initialised.to(embedding.dtype)


def key_frequency_projection(logits: torch.Tensor, sums: torch.Tensor, modulus: int, keys: list[int]) -> torch.Tensor:
    """The components of ``logits`` (pairs x classes) along cos and sin of 2 pi k (a + b) / p, k in ``keys``.

    ``sums`` holds (a + b) mod p for every pair; the pairs must be all p**2 of them (then these
    directions are orthogonal to each other and to the constant, each with squared norm p**2 / 2).
    """
    projection = torch.zeros_like(logits)
    for k in keys:
        angle = 2 * math.pi * k * sums.to(logits.dtype) / modulus
        for direction in (torch.cos(angle), torch.sin(angle)):
            coefficient = direction @ logits / direction.pow(2).sum()
            projection += direction[:, None] * coefficient[None, :]
    return projection


def progress_measures(
    logits: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor, modulus: int, keys: list[int]
) -> tuple[float, float]:
    """Nanda et al.'s (restricted loss over all pairs, excluded loss on the training pairs)."""
    projection = key_frequency_projection(logits, labels, modulus, keys)
    restricted = logits.mean(dim=0, keepdim=True) + projection
    excluded = logits - projection
    return (
        float(F.cross_entropy(restricted, labels)),
        float(F.cross_entropy(excluded[is_train], labels[is_train])),
    )


class GrokfastExperiment(Experiment):
    """Does an intervention from grokking's mechanism (Grokfast-EMA, or Fourier-initialised embeddings) make
    modular addition generalise sooner than weight decay alone?"""

    name = "grokfast"
    version = "1.2.0"
    Params = GrokfastParams
    recommended_seeds = 5
    metrics = (
        Metric(
            "steps_to_test_99",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="steps",
            description="First evaluated step with test accuracy >= 99%; censored at the step budget "
            "(steps) when it is never reached.",
            scale=Scale.RATIO,
            time_to_event=True,
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
            "restricted_loss",
            Axis.SAFETY,
            higher_is_better=False,
            unit="nats",
            scale=Scale.RATIO,
            description="Nanda et al.'s restricted loss at the end: cross-entropy over all pairs of the "
            "logits keeping only their mean and their cos/sin(2 pi k (a + b) / p) components at the "
            "embedding's top_k_frequencies key frequencies. Safety, a judgement call: low means the "
            "output is carried by a few known Fourier components (the auditable algorithm); it does "
            "not show that nothing else is computed.",
        ),
        Metric(
            "excluded_loss",
            Axis.DIAGNOSTIC,
            higher_is_better=True,
            unit="nats",
            scale=Scale.RATIO,
            description="Nanda et al.'s excluded loss at the end: training-set cross-entropy of the "
            "logits with the key frequencies' cos/sin(2 pi k (a + b) / p) components removed; high "
            "when the fit relies on the key frequencies rather than on memorisation.",
        ),
        Metric(
            "steps_to_train_99",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="steps",
            description="First evaluated step with training accuracy >= 99% (memorisation); censored at "
            "the step budget when it is never reached.",
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
            "steps": 2000,  # seed 0 of the baseline needs ~1,575 (1,500 left it at 98% test accuracy)
            "learning_rate": 1e-2,
            "eval_every": 25,
        },
        # Nanda et al.'s task size (p = 113, 30% of the pairs for training), as in the grokking plugin's
        # gpu preset. Not run on a GPU.
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

    def run(self, params: GrokfastParams, ctx: RunContext) -> dict[str, dict[str, float | NotReached]]:
        device = torch.device(ctx.device)
        p = params.modulus
        a, b, labels, is_train = (t.to(device) for t in modular_addition_split(p, params.train_fraction, ctx.seed))
        train_a, train_b, train_labels = a[is_train], b[is_train], labels[is_train]
        ctx.log(f"(a + b) mod {p}: {int(is_train.sum())} training pairs, {int((~is_train).sum())} test pairs")

        results: dict[str, dict[str, float | NotReached]] = {}
        curves: dict[str, dict[str, list]] = {}
        arms = ((BASELINE, params.baseline_arm), (INTERVENTION, params.intervention_arm))
        for arm_index, (arm, treatment) in enumerate(arms):
            grokfast = treatment == "grokfast"
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            # Built on the CPU then moved, so the initialisation does not depend on the device.
            model = ModularAdditionMLP(p, params.embed_dim, params.hidden_dim)
            if treatment in ("fourier_init", "shuffled_fourier"):
                frequencies = draw_fourier_frequencies(p, params.fourier_init_frequencies, ctx.seed)
                permutation = draw_residue_permutation(p, ctx.seed) if treatment == "shuffled_fourier" else None
                with torch.no_grad():
                    model.embed.weight.copy_(fourier_embedding_init(model.embed.weight, frequencies, permutation))
                shuffled = " over shuffled residues" if permutation else ""
                ctx.log(f"{arm}: embedding initialised with Fourier waves{shuffled} at frequencies {frequencies}")
            model = model.to(device)
            optimiser = torch.optim.AdamW(
                model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay, betas=(0.9, 0.98)
            )
            averages: dict[str, torch.Tensor] | None = None
            curve: dict[str, list] = {"step": [], "train_accuracy": [], "test_accuracy": [], "train_loss": []}
            snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
            reached: dict[str, int | None] = {"train": None, "test": None}
            test_accuracy = 0.0
            log_every = max(1, -(-(params.steps // params.eval_every) // CURVE_POINTS))
            evaluations = 0
            for step in range(1, params.steps + 1):
                loss = F.cross_entropy(model(train_a, train_b), train_labels)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if grokfast:
                    averages = grokfast_ema(model, averages, params.grokfast_alpha, params.grokfast_lambda)
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
                        if math.isfinite(curve["train_loss"][-1]):
                            ctx.log_series("train_loss", step, curve["train_loss"][-1], arm=arm)
                        snapshots.append((step, copy.deepcopy(model.state_dict())))
                    evaluations += 1
                    check_stop(ctx)
                    ctx.progress(
                        (arm_index + 0.95 * step / params.steps) / 2,
                        f"{arm}: step {step}/{params.steps}, train {train_accuracy:.2f}, test {test_accuracy:.2f}",
                    )

            # Progress measures: the final embedding's key frequencies, applied to every snapshot.
            power = fourier_power(model.embed.weight.detach())
            keys = [int(i) + 1 for i in power.sort(descending=True).indices[: params.top_k_frequencies]]
            restricted = excluded = float("nan")
            curve["restricted_loss"], curve["excluded_loss"] = [], []
            with torch.no_grad():
                for step, state in snapshots:
                    model.load_state_dict(state)
                    restricted, excluded = progress_measures(model(a, b), labels, is_train, p, keys)
                    curve["restricted_loss"].append(restricted)
                    curve["excluded_loss"].append(excluded)
                    for name, value in (("restricted_loss", restricted), ("excluded_loss", excluded)):
                        if math.isfinite(value):
                            ctx.log_series(name, step, value, arm=arm)
            curve["key_frequencies"] = keys
            results[arm] = {
                "steps_to_test_99": _event_time(reached["test"], params.steps),
                "test_accuracy": test_accuracy,
                "restricted_loss": restricted,
                "excluded_loss": excluded,
                "steps_to_train_99": _event_time(reached["train"], params.steps),
            }
            curves[arm] = curve
            ctx.progress((arm_index + 1) / 2, f"{arm}: progress measures done")
            ctx.log(
                f"{arm} ({treatment}, weight decay {params.weight_decay:g}): train 99% at "
                f"step {reached['train']}, test 99% at step {reached['test']}, final test accuracy "
                f"{test_accuracy:.3f}, key frequencies {keys}, restricted loss {restricted:.3f}, "
                f"excluded loss {excluded:.3f}"
            )

        ctx.save_artifact("curves.json", json.dumps(curves).encode(), "application/json")
        return results
