"""Smeared keys let a one-layer attention-only transformer form induction heads.

Paper: Olsson, Elhage, Nanda, Joseph et al., *In-context Learning and Induction Heads*,
Transformer Circuits Thread, 2022 (arXiv:2209.11895), Argument 2 ("smeared keys").

The paper's claim: an induction head needs two steps, a previous-token step (which token came
before this key position?) and a match of that with the current token, so a one-layer
attention-only model cannot form one. If each key is made a learned, per-head mix of its own and
the previous token's key, ``k'_t = sigmoid(a) * k_t + (1 - sigmoid(a)) * k_{t-1}``, the first
step is built into the architecture and a one-layer model forms induction heads (and gets the
in-context-learning phase change) on the ordinary language-model loss. An interpretability
insight (the two-step mechanism) turned into an architectural change that moves a capability
figure (loss and accuracy on repeated text).

Design: the induction plugin's data, model pieces and induction score, imported from
``plugins.induction.experiment`` (uniform random tokens whose last ``L`` tokens repeat the ``L``
before them, ``L`` drawn per sequence; attention-only transformer with pre-LayerNorm, learned
absolute positions, no MLP). Both arms have one attention layer and train on the ordinary
next-token loss over the whole sequence (no curriculum): ``baseline`` with plain keys,
``intervention`` with smeared keys (one mixing logit ``a`` per head, initialised at 0, i.e. an
even mix; the first position's previous key is zero). Same seed, same data stream, same initial
weights (the smeared layer reuses the plain layer's freshly initialised modules), same budget.

Metrics, all on held-out sequences: ``induction_score`` (the best head's mean attention from a
repeated token to the token after its earlier copy; 1 = a perfect induction head),
``repeat_accuracy`` and ``repeat_loss`` (top-1 accuracy and cross-entropy of the next-token
predictions inside the repeated segment, i.e. in-context).

Why this safety label: ``induction_score`` is labelled safety, as in the induction plugin,
because a mechanism we can name and locate makes in-context copying auditable; a judgement call:
it measures the attention (prefix-matching) half of an induction head only, and a higher score
is not by itself safer. ``repeat_accuracy`` and ``repeat_loss`` are capability figures.

Reproduced figures (issue 14, re-measured in session 20 with ``bench/plugin_times.py --seeds 5``;
default parameters, one CPU thread on a shared 2-core machine, seeds 0-4, mean ± SD over seeds;
25-51 s per seed for both arms; 22-33 s in session 20 at load 3-8):

=====================  =====================  ======================
metric                 plain keys (baseline)  smeared keys (interv.)
=====================  =====================  ======================
induction_score        0.082 ± 0.002          0.722 ± 0.022
repeat_accuracy        0.127 ± 0.007          0.924 ± 0.004
repeat_loss (nats)     3.52 ± 0.07            0.34 ± 0.02
=====================  =====================  ======================

Per seed (0-4), induction_score 0.085 / 0.084 / 0.079 / 0.082 / 0.081 against 0.728 / 0.727 /
0.714 / 0.691 / 0.751; repeat_accuracy 0.132 / 0.132 / 0.123 / 0.132 / 0.117 against 0.924 /
0.922 / 0.928 / 0.919 / 0.926. On the ordinary loss the one-layer model with smeared keys comes
close to what the induction plugin's *two*-layer model reaches with its default repeated-segment
curriculum (0.79-0.83, 92-93%); on the ordinary loss at this budget a plain two-layer model forms
no head (the induction plugin's ``train_on_repeat_only=false`` table, seeds 0-2: best scores
0.054 / 0.022 / 0.055). In every seed one or two heads move their own-key weight sigmoid(a) from
0.5 to about 0.07-0.13, i.e. key ~90% on the previous token, which is the previous-token step of
the mechanism; the others stay near 0.4-0.6.
Tiny preset (seeds 0-1, ~2 s per seed): induction_score ~0.22 against ~0.66, repeat_accuracy
~0.32-0.34 against 0.87.

Not measured: the phase change's timing (the curves are logged as series), the copying (OV) half
of an induction head, and natural-language data (the paper's small models trained on text). The
best head scores below 1 partly because random tokens recur earlier in the sequence, and an
induction head also attends after those occurrences. The gpu preset has the shapes of the induction
plugin's gpu preset (context 96, segments 12-40, width 128, 8 heads, batch 256, lr 3e-3) but 3,000
steps, not that preset's 10,000: the induction plugin's gpu preset trains on the ordinary
next-token loss (``train_on_repeat_only=false``; its CPU default is the repeated-segment
curriculum) and its budget is sized for a plain two-layer model, which forms its head late there;
this plugin trains on the ordinary loss in every preset. Not yet run on a GPU; cut to 500 steps
and run on one CPU thread (seed 0, 683 s) it already gives induction_score 0.04 -> 0.49 and
repeat_accuracy 0.09 -> 0.85.
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

from plugins.induction.experiment import (
    AttentionLayer,
    AttentionOnlyTransformer,
    InductionParams,
    induction_scores,
    make_batch,
    repeat_loss_and_accuracy,
)


class SmearedKeysParams(Params):
    vocab_size: int = Field(64, ge=8, le=4096, description="Number of distinct tokens.")
    seq_len: int = Field(48, ge=8, le=1024, description="Tokens per sequence (prefix + segment + repeat).")
    min_segment: int = Field(8, ge=2, le=500, description="Shortest repeated segment.")
    max_segment: int = Field(20, ge=2, le=500, description="Longest repeated segment.")
    d_model: int = Field(64, ge=8, le=2048, description="Width of the residual stream.")
    n_heads: int = Field(4, ge=1, le=64, description="Attention heads of the one layer.")
    steps: int = Field(600, ge=1, le=200_000, description="AdamW steps per arm.")
    batch_size: int = Field(64, ge=1, le=8192, description="Sequences per training step.")
    lr: float = Field(5e-3, gt=0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=10.0, description="AdamW weight decay.")
    smear_init: float = Field(
        0.0, ge=-10.0, le=10.0, description="Initial mixing logit a of every head (sigmoid(0) = an even mix)."
    )
    eval_every: int = Field(20, ge=1, le=100_000, description="Steps between evaluations (the curves).")
    eval_size: int = Field(256, ge=8, le=65_536, description="Held-out sequences used for every metric.")

    @model_validator(mode="after")
    def _check_shapes(self) -> SmearedKeysParams:
        if self.min_segment > self.max_segment:
            raise ValueError("min_segment must not exceed max_segment")
        if 2 * self.max_segment >= self.seq_len:
            raise ValueError("seq_len must exceed 2 * max_segment (the prefix needs at least one token)")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        return self

    def data_params(self) -> InductionParams:
        """The induction plugin's parameters that describe the same data (for its ``make_batch``)."""
        return InductionParams(
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            min_segment=self.min_segment,
            max_segment=self.max_segment,
            d_model=self.d_model,
            n_heads=self.n_heads,
        )


def smear(keys: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sigmoid(a) * k_t + (1 - sigmoid(a)) * k_{t-1}`` per head; keys (B, H, T, D), logits (H,).

    The key before the first position is zero.
    """
    weight = torch.sigmoid(logits)[None, :, None, None]
    previous = F.pad(keys, (0, 0, 1, 0))[:, :, :-1]
    return weight * keys + (1 - weight) * previous


class SmearedAttentionLayer(AttentionLayer):
    """The induction plugin's attention layer with smeared keys; it takes over a plain layer's modules."""

    def __init__(self, plain: AttentionLayer, smear_init: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.n_heads = plain.n_heads
        self.norm, self.qkv, self.out = plain.norm, plain.qkv, plain.out
        self.smear_logits = nn.Parameter(torch.full((plain.n_heads,), float(smear_init)))

    def forward(self, x: torch.Tensor, with_pattern: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, d_model = x.shape
        head_dim = d_model // self.n_heads
        q, k, v = self.qkv(self.norm(x)).split(d_model, dim=-1)
        q, k, v = (t.view(batch, seq_len, self.n_heads, head_dim).transpose(1, 2) for t in (q, k, v))
        k = smear(k, self.smear_logits)
        pattern = None
        if with_pattern:
            scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).tril()
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            mixed = pattern @ v
        else:
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        mixed = mixed.transpose(1, 2).reshape(batch, seq_len, d_model)
        return x + self.out(mixed), pattern


def build_model(params: SmearedKeysParams, smeared: bool) -> AttentionOnlyTransformer:
    """A one-layer attention-only transformer; with ``smeared`` its layer's keys are smeared.

    Both variants draw the same initial weights from the same seed (the smear logits take no random
    numbers).
    """
    model = AttentionOnlyTransformer(params.vocab_size, params.seq_len, params.d_model, params.n_heads, 1)
    if smeared:
        model.layers = nn.ModuleList(SmearedAttentionLayer(layer, params.smear_init) for layer in model.layers)
    return model


class SmearedKeysExperiment(Experiment):
    """One attention layer with and without smeared keys: do induction heads form (Olsson et al. 2022)?"""

    name = "smeared_keys"
    version = "1.0.0"
    Params = SmearedKeysParams
    recommended_seeds = 5
    metrics = (
        Metric(
            "induction_score",
            Axis.SAFETY,
            higher_is_better=True,
            unit="attention",
            scale=Scale.PROPORTION,
            description=(
                "Best head: mean attention from a repeated token to the token that followed its earlier "
                "occurrence (1 = a perfect induction head). Safety because a mechanism we can name and locate "
                "makes in-context behaviour auditable; a judgement call: it measures the attention "
                "(prefix-matching) half only, not the copying (OV) half, and a higher score is not by itself safer."
            ),
        ),
        Metric(
            "repeat_accuracy",
            Axis.CAPABILITY,
            higher_is_better=True,
            unit="fraction",
            scale=Scale.PROPORTION,
            description="Top-1 accuracy of next-token predictions inside the repeated segment (in-context; "
            "held-out data).",
        ),
        Metric(
            "repeat_loss",
            Axis.CAPABILITY,
            higher_is_better=False,
            unit="nats",
            scale=Scale.RATIO,
            description="Cross-entropy of next-token predictions inside the repeated segment (held-out data).",
        ),
    )
    resources = Resources(device="cpu", time_limit_s=300)
    presets = {
        "tiny": {
            "vocab_size": 16,
            "seq_len": 32,
            "min_segment": 10,
            "max_segment": 15,
            "batch_size": 32,
            "steps": 150,
            "lr": 1e-2,
            "eval_every": 25,
            "eval_size": 128,
        },
        "gpu": {
            "seq_len": 96,
            "min_segment": 12,
            "max_segment": 40,
            "d_model": 128,
            "n_heads": 8,
            "steps": 3000,
            "batch_size": 256,
            "lr": 3e-3,
            "eval_every": 50,
            "eval_size": 1024,
        },
    }

    def run(self, params: SmearedKeysParams, ctx: RunContext) -> dict[str, dict[str, float]]:
        device = torch.device(ctx.device)
        results: dict[str, dict[str, float]] = {}
        curves: dict[str, list[tuple[int, float]]] = {}
        for arm_index, arm in enumerate((BASELINE, INTERVENTION)):
            seed_everything(ctx.seed, deterministic=ctx.deterministic)
            results[arm], curves[arm], pattern = self._train_arm(params, ctx, device, arm_index, arm)
            ctx.log(f"{arm}: " + ", ".join(f"{k}={v:.4g}" for k, v in results[arm].items()))
            image = pattern.repeat_interleave(4, dim=0).repeat_interleave(4, dim=1)
            ctx.save_artifact(f"attention_{arm}.png", png_bytes(image), "image/png")
        ctx.save_artifact("repeat_loss_curves.json", json.dumps({"curves": curves}).encode(), "application/json")
        ctx.progress(1.0, "done")
        return results

    def _train_arm(
        self, params: SmearedKeysParams, ctx: RunContext, device: torch.device, arm_index: int, arm: str
    ) -> tuple[dict[str, float], list[tuple[int, float]], torch.Tensor]:
        smeared = arm == INTERVENTION
        data = params.data_params()
        # Seeded alike for both arms: both see the same sequences.
        generator = torch.Generator(device=device).manual_seed(ctx.seed)
        eval_batch = make_batch(data, params.eval_size, generator, device)
        model = build_model(params, smeared).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        curve: list[tuple[int, float]] = []
        # at most ~200 points per series
        log_every = max(1, -(-(params.steps // params.eval_every) // 200))
        label = "smeared keys" if smeared else "plain keys"

        def evaluate(step: int) -> None:
            model.eval()
            with torch.no_grad():
                logits, patterns = model(eval_batch.tokens, with_patterns=True)
                loss, accuracy = (float(t) for t in repeat_loss_and_accuracy(logits, eval_batch))
                score = float(induction_scores(patterns[-1], eval_batch).max())
            model.train()
            if len(curve) % log_every == 0 or step == params.steps:
                for name, value in (("induction_score", score), ("repeat_accuracy", accuracy), ("repeat_loss", loss)):
                    if math.isfinite(value):  # a diverged model's NaN is no curve point
                        ctx.log_series(name, step, value, arm=arm)
            curve.append((step, loss))

        evaluate(0)
        for step in range(1, params.steps + 1):
            batch = make_batch(data, params.batch_size, generator, device)
            logits, _ = model(batch.tokens)
            # The ordinary language-model loss: every next token of the sequence.
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % params.eval_every == 0 or step == params.steps:
                evaluate(step)
                check_stop(ctx)
                ctx.progress(
                    (arm_index + step / params.steps) / 2,
                    f"{label}: step {step}/{params.steps}, repeat loss {curve[-1][1]:.3f}",
                )

        model.eval()
        with torch.no_grad():
            logits, patterns = model(eval_batch.tokens, with_patterns=True)
            repeat_loss, repeat_accuracy = repeat_loss_and_accuracy(logits, eval_batch)
            scores = induction_scores(patterns[-1], eval_batch)
        best_head = int(scores.argmax())
        if smeared:
            mix = torch.sigmoid(model.layers[0].smear_logits).tolist()
            ctx.log("own-key weight sigmoid(a) per head: " + ", ".join(f"{w:.3f}" for w in mix))
        metrics = {
            "induction_score": float(scores[best_head]),
            "repeat_accuracy": float(repeat_accuracy),
            "repeat_loss": float(repeat_loss),
        }
        return metrics, curve, patterns[-1][0, best_head]
