"""The TaylorSeer forecast math, in one place.

Device side (traced into the compiled graphs): `updated_table` and `forecast_from_table`.
Host side (run by the runtime once per step, no device sync): `compute_step_scalars` and
`forecast_step_scalars`, which fill the small per-step vector the device side reads.

Definition (official TaylorSeer code, diffusers' hook): at a computed step s_j with feature F,

    D_0 = F,   D_{i+1} = (D_i(s_j) - D_i(s_{j-1})) / (s_j - s_{j-1})   for i < order,
                                                        while D_i(s_{j-1}) exists;

the new table replaces the old one, so it grows by one order per computed step. At a skipped
step s: F_hat(s) = sum_i D_i (s - s_j)^i / i!. Differences are taken in float32 whatever the
model's dtype; the table is stored in the state dtype.

A table is one tensor of shape ``(order + 1, *feature.shape)``. The per-step vector
``scalars`` (float32, length ``2 * order + 2``) holds

    [c_0 .. c_order | dt | has_prev_0 .. has_prev_{order-1}]

c_i: forecast coefficients (0 past the filled orders), dt: s_j - s_{j-1}, has_prev_i: 1 where
the old table holds D_i. Entries a step does not use are 0.
"""

from __future__ import annotations

import math

import torch


def scalars_length(order: int) -> int:
    return 2 * order + 2


def updated_table(table: torch.Tensor, feature: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
    """The table after a computed step that produced `feature` (pure: the caller copies it in)."""
    order = table.shape[0] - 1
    dt = scalars[order + 1]
    rows = [feature.to(torch.float32)]
    for i in range(order):
        has_prev = scalars[order + 2 + i] > 0
        diff = (rows[i] - table[i].to(torch.float32)) / dt
        # `where`, not a multiply: a missing entry may hold anything (even inf) and dt may be 0.
        rows.append(torch.where(has_prev, diff, torch.zeros_like(diff)))
    return torch.stack(rows).to(table.dtype)


def forecast_from_table(table: torch.Tensor, scalars: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """F_hat = sum_i c_i D_i, summed in order like the reference implementations, cast to `dtype`."""
    order = table.shape[0] - 1
    out = table[0].to(torch.float32) * scalars[0]
    for i in range(1, order + 1):
        out = out + table[i].to(torch.float32) * scalars[i]
    return out.to(dtype)


def forecast_step_scalars(order: int, offset: int, filled: int) -> list[float]:
    """Scalars for forecasting `offset` steps past the last computed step from `filled` orders."""
    coef = [offset**i / math.factorial(i) if i < filled else 0.0 for i in range(order + 1)]
    return coef + [0.0] * (order + 1)


def compute_step_scalars(order: int, dt: int, filled: int) -> list[float]:
    """Scalars for a computed step `dt` steps after the previous one, whose table had `filled` orders."""
    has_prev = [1.0 if i < filled else 0.0 for i in range(order)]
    return [0.0] * (order + 1) + [float(dt)] + has_prev
