"""Induction heads need two attention layers.

Paper: Olsson, Elhage, Nanda, Joseph et al., *In-context Learning and Induction Heads*,
Transformer Circuits Thread, 2022 (arXiv:2209.11895); building on Elhage et al., *A Mathematical
Framework for Transformer Circuits*, 2021.

The paper's claims this plugin should approach:

- Induction heads (attend from a repeated token to the token that followed its earlier
  occurrence, then copy it) need the composition of two attention layers: one-layer
  attention-only models have none (their heads' induction score stays near zero), two-layer
  models form heads that attend almost entirely to the induction target on repeated random
  tokens (the paper's induction-head attention patterns and its small attention-only models,
  where the one-layer model has no phase change and no induction heads).
- They form in an abrupt *phase change* (the paper's Argument 1), seen as a sudden drop of the loss
  on repeated tokens, after which repeated text is predicted almost perfectly.

Design (CPU-sized, data generated in code): vocabulary 64, sequences of 48 uniform random tokens
whose last ``L`` tokens repeat the ``L`` before them, ``L`` drawn from 8..20 per sequence (so the
random prefix has 8 to 32 tokens and position alone cannot find the earlier copy).
Attention-only transformers (d_model 64, 4 heads, pre-LayerNorm, learned absolute positions, no
MLP) trained with AdamW. Arms: 1 layer (baseline) versus 2 layers (intervention), same seed,
same data, same budget.

The training loss is a parameter, ``train_on_repeat_only``:

- ``true`` (the default, a curriculum the paper does not use): the next-token loss of the
  predictions inside the repeated segment only. Every other token is random by construction and
  its loss is gradient noise, so heads form within the CPU budget.
- ``false``: the ordinary next-token loss over the whole sequence, as the paper trains. At the
  default lr (5e-3) and budget (600 steps) no head forms on seeds 0-2 (table below), and seed 0
  run on to 3,000 steps still had none (best score 0.05). At lr 3e-3 a head forms on seed 0 after
  ~1,100 steps (two-layer arm: score 0.08 at step 900, 0.22 at 1,000, 0.61 at 1,100, 0.82 at
  1,200, then flat; repeat loss 3.3 -> 0.56 nats over those 300 steps), but not in 2,000 steps on
  seed 1 (score 0.08; repeat accuracy 0.54, so something is learnt, not an induction head in the
  last layer). On seed 2 the repeat loss falls below 1 nat at step 1,960
  (repeat accuracy 0.77) while the best last-layer head's induction score stays at 0.02 and its
  copying score at 0.03: the repeat is predicted by some other route than a head of the measured
  induction form. The example finding carries the ordinary loss at the default budget as a
  second, labelled experiment, whose claims are expected to fail.

Reproduced figures, repeated-segment loss (defaults, seeds 0-2, one CPU thread, ~18 s per seed for
both arms; abruptness and copying_score added in 1.2.0 and measured on seeds 0-1):

=====================  ===================  ====================
metric                 1 layer (baseline)   2 layers (interv.)
=====================  ===================  ====================
induction_score        0.09                 0.79-0.83
repeat_loss (nats)     2.91-2.95            0.20-0.24
repeat_accuracy        0.15-0.17            0.92-0.93
phase_change_step      not reached (600)    180-220
abruptness             0.24 / 0.23          0.85 / 0.80
copying_score          0.41 / 0.45          0.95 / 0.94
=====================  ===================  ====================

Ordinary loss (``train_on_repeat_only=false``, otherwise defaults; seeds 0 / 1 / 2): no induction
head, the two-layer model's best head below the one-layer model's.

=====================  =====================  =====================
metric                 1 layer (baseline)     2 layers (interv.)
=====================  =====================  =====================
induction_score        0.085 / 0.084 / 0.079  0.054 / 0.022 / 0.055
repeat_loss (nats)     3.49 / 3.41 / 3.58     3.71 / 3.72 / 3.68
repeat_accuracy        0.13 / 0.13 / 0.12     0.11 / 0.11 / 0.11
phase_change_step      not reached (600)      not reached (600)
abruptness             0.095 / 0.095 / 0.083  0.040 / 0.065 / 0.040
copying_score          0.28 / 0.33 / 0.23     0.09 / 0.03 / 0.03
=====================  =====================  =====================

The one-layer and ordinary-loss abruptness values were first measured with a floor of 0.1 and
rescaled (x0.4, exact because those curves' ranges are below 0.1); seed 0 of both settings was
rerun with the final code and matched. These runs (2026-12-03) shared 2 cores with other work at
a load of 6-13, so their wall times (120-840 s) are no guide to the ~18 s per seed above.

``induction_score`` (an attention weight), ``repeat_accuracy``, ``abruptness`` and
``copying_score`` are proportions in [0, 1], ``repeat_loss`` is on the ratio scale, and
``phase_change_step`` is a time to an event: when the repeat loss never falls below
``phase_threshold`` within the ``steps`` budget (the one-layer model) the run reports it as not
reached (``NotReached``, stored censored at the budget), not as the budget.

``abruptness`` measures the paper's "abrupt" from the logged ``induction_score`` series: the
steepest rise of the score within a window of ``abruptness_window`` (10%) of the training steps,
as a share of the score's range over training. The range is floored at 0.25 attention, so a curve
that barely moves (the one-layer model's 0.03 -> 0.09) scores low. For a monotone curve it is the
fraction of the whole gain made inside the steepest window: ~1 for a phase change, ~0.1 for a
steady rise. The window never spans less than one gap between logged points, so a coarse curve
(the tiny preset: evaluations every 20 of 120 steps) overstates it.

``copying_score`` is the copying (OV) half of the definition, which ``induction_score`` does not
see: for the best induction head, the fraction of tokens ``t`` for which attending to ``t`` raises
the logit of ``t`` above every other token's, read from the weights on the direct path
(W_U W_O W_V W_E of Elhage et al. 2021, through the LayerNorms; biases left out since they do not
depend on what is attended). Chance is 1 / vocab_size (random initialisation: 0-0.06 on the tiny
preset). One-layer models copy too (the paper's one-layer heads are copying "skip-trigram" heads;
on the tiny preset the one-layer model's best head scores 1.0 as well), so this metric separates a
formed induction head from an untrained or non-copying one, not two layers from one.

The one-layer model only learns to boost tokens already in the context; the two-layer model's repeat
loss falls from ~3.5 to ~0.6 nats within ~60 steps (seed 0: steps 160 to 220), the paper's abrupt
phase change. Its best head scores below the paper's ~1 partly because random tokens recur earlier in
the sequence and an induction head also attends after those occurrences; the same ambiguity keeps the
repeat accuracy below 1.

The gpu preset trains with the ordinary loss (context 96, width 128, 8 heads, batch 256, lr 3e-3,
10,000 steps). It is not yet run on a GPU: its budget is sized from CPU measurements (one thread,
batch 64, seed 0). On the repeated-segment loss these shapes formed their head ~3x later than the
defaults (~630 against ~200 steps). On the ordinary loss at lr 3e-3 the default shapes form one at
~1,100 steps on seed 0 and none in 2,000 on seed 1, and the gpu shapes had none by step 700 (score
0.02, repeat loss 4.03; stopped there for time). Three times 1,100-2,000 is 3,300-6,000 steps at
batch 64; 10,000 steps at four times the batch leave a margin over that, on an extrapolation that a
GPU run has yet to confirm (``phase_change_step`` and the logged curves will show it).

Caveats (issue 14): the default is the repeated-segment curriculum, which the paper does not use;
with the ordinary loss no head forms in the default CPU budget, and at lr 3e-3 and 2,000 steps
only on some seeds. Natural-language data (the paper's small models trained on text) is not
reproduced.

Safety label, a judgement call: ``induction_score`` is labelled safety because a mechanism we can
name and locate (interpretability) makes in-context copying auditable; it measures only the
attention (prefix-matching) half of an induction head, and a higher score is not by itself safer.
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
    png_bytes,
    seed_everything,
)
from pydantic import Field, model_validator
from torch import nn


class InductionParams(Params):
    vocab_size: int = Field(64, ge=8, le=4096, description="Number of distinct tokens.")
    seq_len: int = Field(48, ge=8, le=1024, description="Tokens per sequence (prefix + segment + repeat).")
    min_segment: int = Field(8, ge=2, le=500, description="Shortest repeated segment.")
    max_segment: int = Field(20, ge=2, le=500, description="Longest repeated segment.")
    d_model: int = Field(64, ge=8, le=2048, description="Width of the residual stream.")
    n_heads: int = Field(4, ge=1, le=64, description="Attention heads per layer.")
    baseline_layers: int = Field(1, ge=1, le=12, description="Attention layers of the baseline model.")
    intervention_layers: int = Field(2, ge=1, le=12, description="Attention layers of the intervention model.")
    steps: int = Field(600, ge=1, le=200_000, description="AdamW steps per arm.")
    batch_size: int = Field(64, ge=1, le=8192, description="Sequences per training step.")
    lr: float = Field(5e-3, gt=0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=10.0, description="AdamW weight decay.")
    train_on_repeat_only: bool = Field(
        True,
        description=(
            "The training loss. True (default, a curriculum the paper does not use): the next-token loss of the "
            "predictions inside the repeated segment only (the other tokens are random, so their loss is pure "
            "gradient noise). False: the ordinary next-token loss over the whole sequence, as in the paper; "
            "much slower: at the default lr and steps no induction head forms (at lr 3e-3 and 2,000 steps, "
            "one did on seed 0 of seeds 0-2)."
        ),
    )
    eval_every: int = Field(20, ge=1, le=100_000, description="Steps between evaluations of the repeat loss.")
    eval_size: int = Field(256, ge=8, le=65_536, description="Held-out sequences used for every metric.")
    phase_threshold: float = Field(
        1.0,
        gt=0,
        le=20.0,
        description="Repeat loss (nats) whose first crossing marks the phase change.",
    )
    abruptness_window: float = Field(
        0.1,
        gt=0,
        le=1.0,
        description="Width of the window, as a fraction of the training steps, in which abruptness looks for "
        "the steepest rise of the induction score.",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> InductionParams:
        if self.min_segment > self.max_segment:
            raise ValueError("min_segment must not exceed max_segment")
        if 2 * self.max_segment >= self.seq_len:
            raise ValueError("seq_len must exceed 2 * max_segment (the prefix needs at least one token)")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        return self


class Batch:
    """Token sequences and where their repeated segment lies."""

    def __init__(self, tokens: torch.Tensor, segment_len: torch.Tensor) -> None:
        self.tokens = tokens  # (B, T)
        self.segment_len = segment_len  # (B,)
        seq_len = tokens.shape[1]
        positions = torch.arange(seq_len, device=tokens.device)
        repeat_start = (seq_len - segment_len)[:, None]
        # Every token of the repeat has an earlier copy; its induction target is the token after it.
        self.repeat_mask = positions[None, :] >= repeat_start  # (B, T)
        self.source = (positions[None, :] - segment_len[:, None] + 1).clamp(min=0)  # (B, T)


def make_batch(params: InductionParams, size: int, generator: torch.Generator, device: torch.device) -> Batch:
    """Uniform random tokens; the last ``L`` tokens repeat the ``L`` before them (``L`` random per row)."""
    seq_len = params.seq_len
    segment_len = torch.randint(params.min_segment, params.max_segment + 1, (size,), generator=generator, device=device)
    tokens = torch.randint(params.vocab_size, (size, seq_len), generator=generator, device=device)
    positions = torch.arange(seq_len, device=device)[None, :]
    in_repeat = positions >= (seq_len - segment_len)[:, None]
    source = torch.where(in_repeat, positions - segment_len[:, None], positions)
    return Batch(tokens.gather(1, source), segment_len)


class AttentionLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, with_pattern: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, d_model = x.shape
        head_dim = d_model // self.n_heads
        q, k, v = self.qkv(self.norm(x)).split(d_model, dim=-1)
        q, k, v = (t.view(batch, seq_len, self.n_heads, head_dim).transpose(1, 2) for t in (q, k, v))
        pattern = None
        if with_pattern:
            scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).tril()
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
            mixed = pattern @ v
        else:  # the fused kernel is faster, but does not expose the attention pattern
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        mixed = mixed.transpose(1, 2).reshape(batch, seq_len, d_model)
        return x + self.out(mixed), pattern


class AttentionOnlyTransformer(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_heads: int, n_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.layers = nn.ModuleList(AttentionLayer(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, with_patterns: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits, and the attention pattern (B, H, T, T) of every layer when ``with_patterns``."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)[None]
        patterns = []
        for layer in self.layers:
            x, pattern = layer(x, with_patterns)
            if pattern is not None:
                patterns.append(pattern)
        return self.unembed(self.norm(x)), patterns


def repeat_loss_and_accuracy(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss and accuracy on the predictions made inside the repeated segment.

    The repeat ends the sequence, so these are the predictions at repeated positions but the last.
    """
    mask = batch.repeat_mask[:, :-1]
    predicted = logits[:, :-1][mask]
    targets = batch.tokens[:, 1:][mask]
    loss = F.cross_entropy(predicted, targets)
    accuracy = (predicted.argmax(dim=-1) == targets).float().mean()
    return loss, accuracy


def induction_scores(pattern: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per head: mean attention from each repeated token to the token after its earlier copy."""
    # pattern (B, H, T, T); gather the source column of every query position.
    index = batch.source[:, None, :, None].expand(-1, pattern.shape[1], -1, 1)
    to_source = pattern.gather(-1, index).squeeze(-1)  # (B, H, T)
    mask = batch.repeat_mask[:, None, :].float()
    return (to_source * mask).sum(dim=(0, 2)) / mask.sum(dim=(0, 2))


def ov_logits(model: AttentionOnlyTransformer, layer_index: int = -1) -> torch.Tensor:
    """Per head of a layer, its OV circuit on the direct path (Elhage et al. 2021's W_U W_O W_V W_E).

    Returns (H, V, V): row ``t`` holds the logits the head adds when it attends to a token ``t``.
    The token's embedding (plus the mean position embedding) goes through the layer's LayerNorm, the
    head's value and output weights, the final LayerNorm's centring and scale, and the unembedding.
    Biases are left out: attention weights sum to 1, so they add the same vector whatever is attended.
    """
    layer = model.layers[layer_index]
    vocab_size, d_model = model.embed.weight.shape
    n_heads = layer.n_heads
    head_dim = d_model // n_heads
    residual = model.embed.weight + model.position.weight.mean(dim=0)
    values = layer.norm(residual) @ layer.qkv.weight[2 * d_model :].T  # (V, D), heads side by side
    values = values.view(vocab_size, n_heads, head_dim)
    per_head_out = layer.out.weight.view(d_model, n_heads, head_dim)
    written = torch.einsum("vhk,dhk->hvd", values, per_head_out)  # (H, V, D)
    written = written - written.mean(dim=-1, keepdim=True)
    return (written * model.norm.weight) @ model.unembed.weight.T


def copying_scores(model: AttentionOnlyTransformer, layer_index: int = -1) -> torch.Tensor:
    """Per head: the fraction of tokens whose own logit is the highest the head's OV circuit writes when
    it attends to them (1 = attending to any token ``t`` predicts ``t``; chance is 1 / vocabulary)."""
    logits = ov_logits(model, layer_index)
    tokens = torch.arange(logits.shape[-1], device=logits.device)
    return (logits.argmax(dim=-1) == tokens).float().mean(dim=-1)


def abruptness(curve: list[tuple[int, float]], window_steps: float, floor: float = 0.25) -> float:
    """The steepest rise of ``curve`` within ``window_steps`` steps, as a share of the curve's range.

    ``curve`` is (step, induction score) in step order. The window spans at least one gap between
    points, so a coarse curve is still measured. The range is floored at ``floor`` (attention), so a
    curve that only wanders by a few points scores low instead of being scaled up to look abrupt.
    Near 1: the whole rise happens inside the window (a phase change); a steady rise scores about the
    window's share of the training steps.
    """
    if len(curve) < 2:
        return 0.0
    steps = [step for step, _ in curve]
    values = [value for _, value in curve]
    window_steps = max(window_steps, max(b - a for a, b in zip(steps, steps[1:], strict=False)))
    steepest = 0.0
    for start in range(len(curve)):
        end = start + 1
        while end < len(curve) and steps[end] - steps[start] <= window_steps:
            steepest = max(steepest, values[end] - values[start])
            end += 1
    return min(1.0, steepest / max(max(values) - min(values), floor))


class InductionHeadsExperiment(Experiment):
    """One versus two attention layers: do induction heads form (Olsson et al. 2022)?"""

    name = "induction"
    version = "1.2.0"
    Params = InductionParams
    metrics = (
        Metric(
            "induction_score",
            Axis.SAFETY,
            higher_is_better=True,
            unit="attention",
            scale=Scale.PROPORTION,
            description=(
                "Best head of the last layer: mean attention from a repeated token to the token that "
                "followed its earlier occurrence (1 = a perfect induction head). A known mechanism is present. "
                "Safety because a mechanism we can name and locate makes in-context behaviour auditable; a "
                "judgement call: it measures the attention pattern (the prefix-matching half) only, not the "
                "copying (OV) half, and a higher score is not by itself safer."
            ),
        ),
        Metric(
            "repeat_loss",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="nats",
            scale=Scale.RATIO,
            description="Cross-entropy of next-token predictions inside the repeated segment (held-out data).",
        ),
        Metric(
            "repeat_accuracy",
            Axis.CAPABILITY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Top-1 accuracy of next-token predictions inside the repeated segment (held-out data).",
        ),
        Metric(
            "phase_change_step",
            Axis.DIAGNOSTIC,
            higher_is_better=False,
            unit="steps",
            description=(
                "First evaluated training step (>= 1) at which the repeat loss falls below phase_threshold "
                "nats; censored at the step budget when that never happens (no phase change). Version 1 "
                "stored the budget as if it were the value, and counted step 0 (before training)."
            ),
            version=2,
            scale=Scale.RATIO,
            time_to_event=True,
        ),
        Metric(
            "abruptness",
            Axis.DIAGNOSTIC,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description=(
                "How abrupt the induction head's formation is, from the induction_score training series: the "
                "steepest rise of the score within abruptness_window of the training steps, as a share of the "
                "score's range over training (floored at 0.25 attention, so a curve that barely moves scores "
                "low). About 1 = the whole rise inside the window (a phase change); a steady rise scores "
                "about the window's share (0.1). Higher is not better: it describes the dynamics."
            ),
        ),
        Metric(
            "copying_score",
            Axis.DIAGNOSTIC,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description=(
                "The copying (OV) half of an induction head, for the head with the best induction score: the "
                "fraction of tokens t for which attending to t raises the logit of t above every other token's, "
                "read from the weights (W_U W_O W_V W_E on the direct path, Elhage et al. 2021). Chance is "
                "1 / vocab_size; 1 = the head copies every token."
            ),
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        # Shorter sequences over a smaller vocabulary: the phase change comes at ~70 steps instead of ~200.
        "tiny": {
            "vocab_size": 16,
            "seq_len": 32,
            "min_segment": 10,
            "max_segment": 15,
            "batch_size": 32,
            "steps": 120,
            "lr": 1e-2,
            "eval_every": 20,
            "eval_size": 128,
        },
        # The paper's ordinary next-token loss on twice the context and width, four times the batch;
        # steps sized from CPU measurements (see the module docstring), not yet run on a GPU.
        "gpu": {
            "seq_len": 96,
            "min_segment": 12,
            "max_segment": 40,
            "d_model": 128,
            "n_heads": 8,
            "train_on_repeat_only": False,
            "steps": 10_000,
            "batch_size": 256,
            "lr": 3e-3,
            "eval_every": 50,
            "eval_size": 1024,
        },
    }

    def run(self, params: InductionParams, ctx: RunContext) -> dict[str, dict[str, float | NotReached]]:
        device = torch.device(ctx.device)
        arms = {BASELINE: params.baseline_layers, INTERVENTION: params.intervention_layers}
        results: dict[str, dict[str, float | NotReached]] = {}
        curves: dict[str, list[tuple[int, float]]] = {}
        for arm_index, (arm, n_layers) in enumerate(arms.items()):
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            results[arm], curves[arm], pattern = self._train_arm(params, ctx, device, arm_index, n_layers)
            ctx.log(
                f"{arm} ({n_layers} layer{'s' if n_layers > 1 else ''}): "
                + ", ".join(
                    f"{k}=not reached in {v.budget:g}" if isinstance(v, NotReached) else f"{k}={v:.4g}"
                    for k, v in results[arm].items()
                )
            )
            # The best last-layer head on the first held-out sequence, 4x enlarged.
            image = pattern.repeat_interleave(4, dim=0).repeat_interleave(4, dim=1)
            ctx.save_artifact(f"attention_{arm}.png", png_bytes(image), "image/png")
        ctx.save_artifact(
            "repeat_loss_curves.json",
            json.dumps({"threshold": params.phase_threshold, "curves": curves}).encode(),
            "application/json",
        )
        ctx.progress(1.0, "done")
        return results

    def _train_arm(
        self, params: InductionParams, ctx: RunContext, device: torch.device, arm_index: int, n_layers: int
    ) -> tuple[dict[str, float | NotReached], list[tuple[int, float]], torch.Tensor]:
        # The data generator is seeded alike for both arms, so both see the same sequences.
        generator = torch.Generator(device=device).manual_seed(ctx.seed)
        eval_batch = make_batch(params, params.eval_size, generator, device)
        model = AttentionOnlyTransformer(
            params.vocab_size, params.seq_len, params.d_model, params.n_heads, n_layers
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)

        curve: list[tuple[int, float]] = []
        score_curve: list[tuple[int, float]] = []  # the logged induction_score series
        phase_change_step: int | None = None

        arm = self.arms[arm_index]
        # the curves (ctx.log_series): every evaluation up to ~200 points per series, then thinned
        log_every = max(1, -(-(params.steps // params.eval_every) // 200))

        def evaluate(step: int) -> None:
            nonlocal phase_change_step
            model.eval()
            with torch.no_grad():
                loss = float(repeat_loss_and_accuracy(model(eval_batch.tokens)[0], eval_batch)[0])
                log = len(curve) % log_every == 0 or step == params.steps  # step 0 is always logged
                if log:  # the patterns' forward is the unfused one: the loss above stays the fused kernel's
                    patterns = model(eval_batch.tokens, with_patterns=True)[1]
                    score = float(induction_scores(patterns[-1], eval_batch).max())
            model.train()
            if log:
                if math.isfinite(score):  # a diverged model's NaN is no curve point
                    ctx.log_series("induction_score", step, score, arm=arm)
                    score_curve.append((step, score))
                if math.isfinite(loss):
                    ctx.log_series("repeat_loss", step, loss, arm=arm)
            curve.append((step, loss))
            # Step 0 (the untrained model) is on the curve but is no event time: a loss already below
            # the threshold there is recorded at the first evaluation after training starts.
            if step > 0 and phase_change_step is None and loss < params.phase_threshold:
                phase_change_step = step
                ctx.log(f"{n_layers}-layer model: repeat loss {loss:.3f} < {params.phase_threshold} at step {step}")

        evaluate(0)
        for step in range(1, params.steps + 1):
            batch = make_batch(params, params.batch_size, generator, device)
            logits, _ = model(batch.tokens)
            if params.train_on_repeat_only:
                loss = repeat_loss_and_accuracy(logits, batch)[0]
            else:
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % params.eval_every == 0 or step == params.steps:
                evaluate(step)
                check_stop(ctx)
                ctx.progress(
                    (arm_index + step / params.steps) / 2,
                    f"{n_layers}-layer model: step {step}/{params.steps}, repeat loss {curve[-1][1]:.3f}",
                )

        model.eval()
        with torch.no_grad():
            logits, patterns = model(eval_batch.tokens, with_patterns=True)
            repeat_loss, repeat_accuracy = repeat_loss_and_accuracy(logits, eval_batch)
            scores = induction_scores(patterns[-1], eval_batch)
            best_head = int(scores.argmax())
            copying = float(copying_scores(model)[best_head])
        metrics = {
            "induction_score": float(scores[best_head]),
            "repeat_loss": float(repeat_loss),
            "repeat_accuracy": float(repeat_accuracy),
            "phase_change_step": (
                NotReached(budget=float(params.steps)) if phase_change_step is None else float(phase_change_step)
            ),
            "abruptness": abruptness(score_curve, params.abruptness_window * params.steps),
            "copying_score": copying,
        }
        return metrics, curve, patterns[-1][0, best_head]
