"""Metrics: PSNR, SSIM, relative L2 against full compute; Fréchet distance; the feature classifier.

SSIM: the standard formula (Wang et al. 2004, K1 = 0.01, K2 = 0.03) with a *small* Gaussian window
(5x5, sigma 1.0, valid positions only: a 4x4 map per 8x8 image) because the usual 11x11 window does
not fit an 8x8 image. Images are in [-1, 1]: data range L = 2. PSNR is per image, averaged.

Fréchet distance: the FID formula in the 32-d penultimate-layer features of a small MLP classifier
trained here on the digits train split; it is NOT Inception FID and its values are not comparable
with published FIDs.
"""

from __future__ import annotations

import math
import os

import torch

DATA_RANGE = 2.0


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over images of 10 log10(L^2 / MSE); inf when every image is identical."""
    x, ref = x.clamp(-1, 1).double(), ref.clamp(-1, 1).double()
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    vals = 10 * torch.log10(DATA_RANGE ** 2 / mse)  # inf where mse == 0
    return float(vals.mean())


def _gauss_window(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, ref: torch.Tensor, size: int = 5, sigma: float = 1.0) -> float:
    """Mean SSIM over images (B, 1, H, W) in [-1, 1]; 1.0 for identical images."""
    x, ref = x.clamp(-1, 1).double(), ref.clamp(-1, 1).double()
    w = _gauss_window(size, sigma)
    conv = lambda t: torch.nn.functional.conv2d(t, w)  # noqa: E731 (valid positions)
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    mx, my = conv(x), conv(ref)
    vx, vy = conv(x * x) - mx ** 2, conv(ref * ref) - my ** 2
    cxy = conv(x * ref) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.flatten(1).mean(1).mean())


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def _sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), float64, eigh-based."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    middle = (middle + middle.T) / 2
    tr_sqrt = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt)


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


def frechet_of_sets(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


# --- the feature classifier -------------------------------------------------------------------

class DigitClassifier(torch.nn.Module):
    """MLP 64 -> 128 -> 32 (features) -> 10, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128),
                                        torch.nn.ReLU(), torch.nn.Linear(128, 32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.clamp(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIER_SEED = 0
CLASSIFIER_STEPS = 600


def train_classifier(x: torch.Tensor, y: torch.Tensor, seed: int = CLASSIFIER_SEED,
                     steps: int = CLASSIFIER_STEPS) -> DigitClassifier:
    """Full-batch Adam (lr 3e-3, weight decay 1e-4), light Gaussian input noise; seconds on CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        net = DigitClassifier()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            noisy = x + 0.1 * torch.randn(x.shape, generator=g)
            loss = torch.nn.functional.cross_entropy(net(noisy), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def load_or_train_classifier(path: str | None, x: torch.Tensor, y: torch.Tensor) -> DigitClassifier:
    from safetensors.torch import load_file, save_file

    net = DigitClassifier()
    if path and os.path.exists(path):
        net.load_state_dict(load_file(path))
        return net.eval()
    net = train_classifier(x, y)
    if path:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return net


@torch.no_grad()
def accuracy(net: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).double().mean())


@torch.no_grad()
def features(net: DigitClassifier, x: torch.Tensor) -> torch.Tensor:
    return net.features(x)


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    if len(vals) < 2 or any(math.isinf(v) for v in vals):
        return m, 0.0 if not any(math.isinf(v) for v in vals) else math.nan
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
