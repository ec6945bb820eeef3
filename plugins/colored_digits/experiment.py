"""Shortcut learning on real digits: ERM versus IRM on Colored-Digits (scikit-learn's 8x8 digits).

Paper: Arjovsky, Bottou, Gulrajani & Lopez-Paz, *Invariant Risk Minimization*, 2019
(arXiv:1907.02893), Section 5.2 and its Colored-MNIST table; the training recipe follows the
paper's reference code (facebookresearch/InvariantRiskMinimization, ``colored_mnist``).

The figures the paper reports (mean accuracy, their table):

=====================  =========  ========
method                 train      test
=====================  =========  ========
ERM                    87.4%      17.1%
IRM                    70.8%      66.9%
optimal invariant      75%        75%
=====================  =========  ========

Why this plugin next to ``shortcut``: the shortcut plugin's synthetic digits (10 random prototypes
plus pixel noise) are told apart without error, so shape is a *noiseless* 75% predictor there and
IRM lands at the invariant optimum, above the paper. Here the digits are real handwriting:
scikit-learn's bundled copy of the UCI optical-recognition digits (``sklearn.datasets.load_digits``,
1,797 images of 8x8 pixels with 17 grey levels, shipped inside the package: nothing is downloaded).
A model must generalise from a few hundred training images to held-out writers' digits, so
shape is a noisy predictor, as it is on MNIST.

Protocol (the paper's, on these digits): the binary label is "digit < 5", flipped with probability
0.25; a colour agrees with the label with probability 0.9 and 0.8 in the two training environments
and 0.1 in the test environment; the digit is written into the red or the green channel of a
two-channel image, the other channel blank. The images are split once per seed: ``test_fraction``
of them (default 30%, ~540) are held out for the test environment, and the rest is cut into two
disjoint halves, one per training environment (as the paper splits MNIST's training set). The
pixels are scaled to [0, 1]; with ``n_pixels`` above 64 they are upscaled bilinearly (196: the
paper's 14x14); ``pixel_noise`` (default 0) adds Gaussian noise to them.

Design: training and the model are the shortcut plugin's own (:func:`plugins.shortcut.experiment.
train_model` with this plugin's sampler; an MLP with two hidden layers, Adam, the paper's L2 weight,
learning rate, step count, penalty weight and annealing). As there, every step draws fresh samples:
here, images *of the environment's own pool*, drawn with replacement, with fresh label-noise and
colour draws (so the model cannot memorise the 25% flipped labels of a fixed set; the images
themselves are few and seen many times). ``train_accuracy`` is measured on the training images
(fresh label and colour draws), ``test_accuracy`` on the held-out images. Arms: ERM (baseline,
penalty 0) versus IRMv1 (intervention), same initial weights, same samples.

Reproduced figures (issue 14, re-measured in session 20; defaults, seeds 0-4, one CPU thread; mean
+/- SD, range):

=====================  ==========================  ==========================
metric                 ERM                         IRMv1
=====================  ==========================  ==========================
train_accuracy         0.850 +/- .002 (.848-.854)  0.677 +/- .015 (.664-.702)
test_accuracy          0.101 +/- .003 (.098-.105)  0.712 +/- .013 (.696-.726)
worst_group_accuracy   0.000 +/- .000              0.616 +/- .051 (.555-.689)
=====================  ==========================  ==========================

The paper's direction is reproduced (test accuracy seven times higher, at ~17 points of training
accuracy, as in the paper's 87.4 -> 70.8). The figures are not the paper's: ERM settles on the
colour's Bayes rate (85 / 10) since fresh label and colour draws leave nothing to memorise (the
paper's 87.4 / 17.1 includes memorised noise); IRM's test accuracy sits ~4 points above the
paper's 66.9 (~3 SD of these seeds), closer than the shortcut plugin's 74.5; and IRM's training
accuracy is *below* its test accuracy (the paper's 70.8 is above its 66.9): in training, where the
colour mostly agrees with the label, this IRM model loses a little, i.e. it leans slightly *against*
the colour rather than partly on it. How noisy shape is here: a scikit-learn MLP (128, 128) fitted
on the ~1,260 non-held-out digits with clean labels tells digit < 5 on the held-out ones with
96.8-98.9% accuracy (logistic regression 88-91%; the five seeds' splits), so a shape-only model's
ceiling at test is ~0.73-0.74, not 0.75; IRM sees noisy labels and half the images per environment.
CPU time per seed (both arms, one thread): 8-11 s on a 2-CPU machine at load ~9 (the shortcut
plugin took 9-11 s in the same interleaved run), 5-11 s at load 3-8 (session 20); the tiny preset
1.4-1.9 s.

Provenance of the hyperparameters: those of the shortcut plugin, i.e. the IRM settings of the
reference code (``reproduce_paper_results.sh``: lr 4.898e-4, L2 1.1079e-3, penalty 91257.19,
annealing 190 steps, 501 steps), chosen upstream by a random search that maximised
min(train_env0_acc, train_env1_acc, test_acc), i.e. partly on the *test* environment. They were not
re-tuned on these digits, so the defaults add no selection of its own, but the figures inherit
that optimism. The ``tiny`` preset (tests only) is the shortcut plugin's, with the annealing and
step count (100 of 201 steps) picked among four settings by IRM's test accuracy on seeds 0-5: its
figures are selected on the test environment and are not evidence.

Safety labels. ``test_accuracy`` counts as safety because it measures whether the model keeps
working when a spurious cue it could have relied on turns against it (robustness to a shortcut).
It is a judgement call: a constant predictor scores about 0.50, far above ERM's ~0.1, so a rise
alone does not show the model learnt the shape; read it with ``train_accuracy`` and
``worst_group_accuracy``. ``worst_group_accuracy`` counts as safety for the same reason and is
harder to game: a constant predictor scores 0 on the groups of the other label.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from interp_registry.sdk import Resources
from pydantic import Field, model_validator

from plugins.shortcut.experiment import EnvironmentSampler, ShortcutExperiment, ShortcutParams

try:
    from sklearn.datasets import load_digits
except ImportError as exc:  # the registry lists the plugin as unavailable, with this reason
    raise ImportError(
        "colored_digits needs scikit-learn for its bundled 8x8 digits (sklearn.datasets.load_digits); "
        "install it with: pip install 'interp-registry-server[real-data]'"
    ) from exc

NATIVE_SIDE = 8


class ColoredDigitsParams(ShortcutParams):
    n_pixels: int = Field(
        64,
        ge=64,
        le=4096,
        description="Pixels per colour channel, a square: 64 (the native 8x8) or more, the digits upscaled "
        "bilinearly (196: the paper's 14x14).",
    )
    pixel_noise: float = Field(
        0.0, ge=0.0, le=5.0, description="Standard deviation of Gaussian noise added to every pixel (0: none)."
    )
    test_fraction: float = Field(
        0.3,
        ge=0.05,
        le=0.9,
        description="Share of the 1,797 digits held out for the test environment (the rest is split between "
        "the training environments).",
    )

    @model_validator(mode="after")
    def _check_square(self) -> ColoredDigitsParams:
        if math.isqrt(self.n_pixels) ** 2 != self.n_pixels:
            raise ValueError("n_pixels must be a square (64 = 8x8, 196 = 14x14)")
        return self


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images (flattened 8x8, scaled to [0, 1]) and their digits, loaded once per process."""
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def digit_images(n_pixels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit as a (1797, n_pixels) tensor in [0, 1] (upscaled bilinearly beyond 8x8) and its class."""
    images, digits = _digits()
    shapes = torch.from_numpy(images).to(device)
    side = math.isqrt(n_pixels)
    if side != NATIVE_SIDE:
        grid = shapes.view(-1, 1, NATIVE_SIDE, NATIVE_SIDE)
        shapes = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False).flatten(1)
    return shapes.clamp(0.0, 1.0), torch.from_numpy(digits).to(device)


def colour(
    shapes: torch.Tensor,
    digits: torch.Tensor,
    label_noise: float,
    colour_noise: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Colored-MNIST labelling of some digits: label "digit < 5" flipped with ``label_noise``,
    colour = label flipped with ``colour_noise``, the digit written into channel ``colour``."""
    size, device = len(digits), digits.device

    def bernoulli(p: float) -> torch.Tensor:
        return (torch.rand(size, generator=generator, device=device) < p).float()

    labels = ((digits < 5).float() - bernoulli(label_noise)).abs()  # xor
    colours = (labels - bernoulli(colour_noise)).abs()
    images = torch.cat([shapes * (1 - colours)[:, None], shapes * colours[:, None]], dim=1)
    return images, labels, colours


def digits_sampler(
    params: ColoredDigitsParams, generator: torch.Generator, *, device: torch.device
) -> tuple[torch.Tensor, EnvironmentSampler]:
    """Split the digits (held-out test images; the rest in one disjoint part per training
    environment) and sample an environment: its images with replacement, fresh label and colour draws."""
    shapes, digits = digit_images(params.n_pixels, device)
    order = torch.randperm(len(digits), generator=generator, device=device)
    n_test = max(1, round(params.test_fraction * len(digits)))
    test_pool, train_pool = order[:n_test], order[n_test:]
    pools = list(train_pool.tensor_split(len(params.train_colour_noise)))

    def sample(size: int, environment: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool = test_pool if environment is None else pools[environment]
        noise = params.test_colour_noise if environment is None else params.train_colour_noise[environment]
        chosen = pool[torch.randint(len(pool), (size,), generator=generator, device=device)]
        images = shapes[chosen]
        if params.pixel_noise > 0:
            jitter = torch.randn(images.shape, generator=generator, device=device)
            images = (images + params.pixel_noise * jitter).clamp(0.0, 1.0)
        return colour(images, digits[chosen], params.label_noise, noise, generator)

    return shapes, sample


class ColoredDigitsExperiment(ShortcutExperiment):
    """ERM learns the spurious colour; IRM the shape of real digits (Arjovsky et al. 2019, Colored-Digits)."""

    # The shortcut plugin's arms, training, metrics (axes, scales, descriptions) and curves; other data.
    name = "colored_digits"
    version = "1.0.0"
    Params = ColoredDigitsParams
    resources = Resources(device="cpu", time_limit_s=300)
    # shortcut's presets (the paper's sizes on gpu); shape is slower to learn than the synthetic
    # digits', so the tiny run is longer and anneals the penalty later (50 steps there)
    presets = {
        "tiny": {**ShortcutExperiment.presets["tiny"], "steps": 201, "penalty_anneal_steps": 100},
        "gpu": ShortcutExperiment.presets["gpu"],
    }

    def data_sampler(
        self, params: ShortcutParams, device: torch.device
    ) -> Callable[[torch.Generator], tuple[torch.Tensor, EnvironmentSampler]]:
        assert isinstance(params, ColoredDigitsParams)
        return functools.partial(digits_sampler, params, device=device)
