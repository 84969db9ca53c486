"""Block-structured toy diffusion-transformer models for the tests.

* :class:`ModelSpec` / :func:`build_model` -> :class:`BlockModel`: a small
  DiT-like network ``forward(x, t)`` whose repeated blocks live in
  ``nn.ModuleList`` attributes ``blocks0``, ``blocks1``, ...
* :func:`block_models`: hypothesis strategy producing :class:`ModelSpec`.
* :class:`PolyModel`: blocks whose outputs are exact polynomials in ``t``.
* :func:`make_inputs`: deterministic ``x`` inputs.

Everything is deterministic (no dropout) and initialised from an explicit seed
without touching the global RNG state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ModelSpec",
    "BlockModel",
    "AdaLNBlock",
    "AttnBlock",
    "build_model",
    "block_paths",
    "block_models",
    "PolyBlock",
    "PolyModel",
    "poly_block_paths",
    "make_inputs",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _t_as_column(t: torch.Tensor) -> torch.Tensor:
    """0-d or (batch,) tensor -> (batch_or_1, 1) float tensor."""
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.float()
    return t.reshape(-1, 1)


def _init_params(module: nn.Module, seed: int, weight_gain: float = 0.5,
                 bias_std: float = 0.02) -> None:
    """Deterministically (re)initialise every parameter from ``seed``.

    Weights (ndim >= 2): N(0, (weight_gain / sqrt(fan_in))^2); other params
    (biases): N(0, bias_std^2).  Does not consume the global RNG.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.ndim >= 2:
                std = weight_gain / math.sqrt(p.shape[1])
            else:
                std = bias_std
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)


# ---------------------------------------------------------------------------
# block model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Description of a :class:`BlockModel`.

    width: hidden size.
    lists: number of blocks in each ModuleList (each >= 2).
    tuple_out: blocks take ``(x, aux, temb)`` and return the tuple ``(x, aux)``;
        otherwise blocks take ``(x, temb)`` and return ``x``.
    pre_op / between_op / post_op: add non-block ops before the first list,
        between consecutive lists, after the last list.
    seed: parameter initialisation seed.
    """

    width: int = 8
    lists: Tuple[int, ...] = (2, 2)
    tuple_out: bool = False
    pre_op: bool = False
    between_op: bool = False
    post_op: bool = False
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "lists", tuple(int(n) for n in self.lists))
        if len(self.lists) < 1:
            raise ValueError("need at least one block list")
        if any(n < 2 for n in self.lists):
            raise ValueError(f"every list needs >= 2 blocks, got {self.lists}")


class TimeEmbedding(nn.Module):
    """Small embedding of the (scalar per sample) timestep ``t``.

    Fixed sinusoidal features of a few low frequencies (bounded and smooth in
    t) followed by a Linear and SiLU.  Returns (batch_or_1, 1, width).
    """

    FREQS = (0.05, 0.2)

    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(2 * len(self.FREQS), width)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        tc = _t_as_column(t).to(self.lin.weight.dtype)
        feats = []
        for f in self.FREQS:
            feats.append(torch.sin(tc * f))
            feats.append(torch.cos(tc * f))
        return F.silu(self.lin(torch.cat(feats, dim=-1))).unsqueeze(1)


class AdaLNBlock(nn.Module):
    """adaLN-modulated MLP block:
    ``x + gate(temb) * mlp(norm(x) * (1 + scale(temb)) + shift(temb))``.

    With ``tuple_out`` it takes / returns ``(x, aux)``; aux enters the norm
    input and is updated as ``aux + 0.1 * aux_lin(x_new)``.
    """

    def __init__(self, width: int, tuple_out: bool = False):
        super().__init__()
        self.tuple_out = tuple_out
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-5)
        self.mod = nn.Linear(width, 3 * width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        if tuple_out:
            self.aux_lin = nn.Linear(width, width)

    def _update(self, x, h_in, temb):
        shift, scale, gate = self.mod(temb).chunk(3, dim=-1)
        h = self.norm(h_in) * (1 + scale) + shift
        h = self.fc2(F.gelu(self.fc1(h)))
        return x + gate * h

    def forward(self, x, *rest):
        if self.tuple_out:
            aux, temb = rest
            x_new = self._update(x, x + aux, temb)
            aux_new = aux + 0.1 * self.aux_lin(x_new)
            return x_new, aux_new
        (temb,) = rest
        return self._update(x, x, temb)


class AttnBlock(nn.Module):
    """Single-head self-attention block with adaLN gating:
    ``x + gate(temb) * attn(norm(x) * (1 + scale(temb)))``.

    With ``tuple_out`` it takes / returns ``(x, aux)``; aux is added to the
    values and updated as ``0.9 * aux + 0.1 * tanh(x_new)``.
    """

    def __init__(self, width: int, tuple_out: bool = False):
        super().__init__()
        self.tuple_out = tuple_out
        self.width = width
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-5)
        self.mod = nn.Linear(width, 2 * width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def _update(self, x, aux, temb):
        scale, gate = self.mod(temb).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        if aux is not None:
            v = v + aux
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.width), dim=-1)
        return x + gate * self.out(att @ v)

    def forward(self, x, *rest):
        if self.tuple_out:
            aux, temb = rest
            x_new = self._update(x, aux, temb)
            return x_new, 0.9 * aux + 0.1 * torch.tanh(x_new)
        (temb,) = rest
        return self._update(x, None, temb)


class BlockModel(nn.Module):
    """DiT-like toy model built from a :class:`ModelSpec`.

    ``forward(x, t)``: x (batch, tokens, width) float, t 0-d or (batch,).
    Lists ``blocks0``, ``blocks1``, ... alternate between :class:`AdaLNBlock`
    (even lists) and :class:`AttnBlock` (odd lists). Like diffusers models it declares its block
    classes (``_no_split_modules``): the MLP-only blocks would not count as the block stack
    beside attention blocks otherwise.
    """

    _no_split_modules = ["AdaLNBlock", "AttnBlock"]

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        W = spec.width
        self.width = W
        self.time_embed = TimeEmbedding(W)
        if spec.pre_op:
            self.pre = nn.Linear(W, W)
        for li, n in enumerate(spec.lists):
            cls = AdaLNBlock if li % 2 == 0 else AttnBlock
            setattr(self, f"blocks{li}",
                    nn.ModuleList([cls(W, spec.tuple_out) for _ in range(n)]))
            if spec.between_op and li < len(spec.lists) - 1:
                setattr(self, f"between{li}", nn.Linear(W, W))
        if spec.post_op:
            self.post = nn.Linear(W, W)
        _init_params(self, spec.seed)
        self.eval()

    @property
    def n_lists(self) -> int:
        return len(self.spec.lists)

    def block_paths(self) -> List[str]:
        return block_paths(self.spec)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_embed(t).to(x.dtype)
        if self.spec.pre_op:
            x = self.pre(x) + temb
        aux = torch.tanh(x) if self.spec.tuple_out else None
        for li in range(self.n_lists):
            for blk in getattr(self, f"blocks{li}"):
                if self.spec.tuple_out:
                    x, aux = blk(x, aux, temb)
                else:
                    x = blk(x, temb)
            if self.spec.between_op and li < self.n_lists - 1:
                x = x + 0.5 * F.gelu(getattr(self, f"between{li}")(x))
        if self.spec.tuple_out:
            x = x + 0.5 * aux
        if self.spec.post_op:
            x = self.post(F.gelu(x)) + x
        return x


def build_model(spec: ModelSpec) -> BlockModel:
    """Build the (eval-mode, float32, deterministic) model described by spec."""
    # Module constructors draw default inits from the global RNG; fork it so
    # building a model has no side effects (all params are re-initialised
    # from spec.seed anyway).
    with torch.random.fork_rng(devices=[]):
        return BlockModel(spec)


def block_paths(spec: ModelSpec) -> List[str]:
    """["blocks0.0", "blocks0.1", ..., "blocks1.0", ...] for ``spec``."""
    return [f"blocks{li}.{bi}" for li, n in enumerate(spec.lists) for bi in range(n)]


def block_models():
    """Hypothesis strategy producing :class:`ModelSpec` instances."""
    from hypothesis import strategies as st

    @st.composite
    def _specs(draw):
        width = draw(st.sampled_from([4, 8, 16]))
        n_lists = draw(st.integers(1, 2))
        lists = tuple(draw(st.integers(2, 4)) for _ in range(n_lists))
        return ModelSpec(
            width=width,
            lists=lists,
            tuple_out=draw(st.booleans()),
            pre_op=draw(st.booleans()),
            between_op=draw(st.booleans()),
            post_op=draw(st.booleans()),
            seed=draw(st.integers(0, 1000)),
        )

    return _specs()


# ---------------------------------------------------------------------------
# polynomial model
# ---------------------------------------------------------------------------
class PolyBlock(nn.Module):
    """Block whose output depends only on t:
    ``x_in * 0 + sum_{p=0..degree} coeffs[p] * t**p``.

    ``coeffs`` is a (degree+1, width) buffer; coefficient p is scaled by
    ``10**-p`` so values stay moderate for t up to ~20-50.
    """

    def __init__(self, degree: int, width: int, coeffs: torch.Tensor):
        super().__init__()
        self.degree = degree
        self.register_buffer("coeffs", coeffs)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tc = _t_as_column(t).to(x.dtype).unsqueeze(-1)  # (B or 1, 1, 1)
        val = torch.zeros_like(x)
        for p in range(self.degree + 1):
            val = val + self.coeffs[p].to(x.dtype) * tc ** p
        return x * 0 + val

    def value(self, t: float) -> torch.Tensor:
        """Exact (float64) block output for scalar t, shape (width,)."""
        c = self.coeffs.double()
        return sum(c[p] * float(t) ** p for p in range(self.degree + 1))


class PolyModel(nn.Module):
    """``forward(x, t) = proj(last block output) + x`` with polynomial blocks.

    Blocks are in ``self.blocks`` (paths ``blocks.0`` ... see
    :func:`poly_block_paths`).  With t = float(step), each block's output
    trajectory is a degree-``degree`` polynomial in the step index.
    """

    def __init__(self, degree: int, width: int = 8, n_blocks: int = 2, seed: int = 0):
        super().__init__()
        self.degree = int(degree)
        self.width = int(width)
        self.n_blocks = int(n_blocks)
        g = torch.Generator().manual_seed(int(seed))
        scales = torch.tensor([10.0 ** -p for p in range(self.degree + 1)]).unsqueeze(1)
        blocks = []
        for _ in range(self.n_blocks):
            c = torch.randn(self.degree + 1, self.width, generator=g) * scales
            blocks.append(PolyBlock(self.degree, self.width, c))
        self.blocks = nn.ModuleList(blocks)
        with torch.random.fork_rng(devices=[]):
            self.proj = nn.Linear(self.width, self.width)
        with torch.no_grad():
            self.proj.weight.copy_(
                torch.randn(self.width, self.width, generator=g) / math.sqrt(self.width))
            self.proj.bias.copy_(torch.randn(self.width, generator=g) * 0.02)
        self.eval()

    def block_paths(self) -> List[str]:
        return poly_block_paths(self.n_blocks)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for blk in self.blocks:
            h = blk(h, t)
        return self.proj(h) + x


def poly_block_paths(n_blocks: int) -> List[str]:
    """["blocks.0", ..., f"blocks.{n_blocks-1}"]."""
    return [f"blocks.{k}" for k in range(n_blocks)]


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------
def make_inputs(spec_or_width: Union[ModelSpec, int, nn.Module], batch: int = 2,
                tokens: int = 3, seed: int = 0) -> torch.Tensor:
    """Deterministic x of shape (batch, tokens, width), float32, N(0, 1).

    ``spec_or_width`` may be a ModelSpec, an int width, or a model with a
    ``width`` attribute (BlockModel, PolyModel).
    """
    if isinstance(spec_or_width, ModelSpec):
        width = spec_or_width.width
    elif isinstance(spec_or_width, int):
        width = spec_or_width
    else:
        width = int(spec_or_width.width)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(batch, tokens, width, generator=g, dtype=torch.float32)
