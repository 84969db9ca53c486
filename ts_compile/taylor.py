"""The TaylorSeer forecast math, in one place.

Device side (traced into the compiled graphs): `updated_table` and `forecast_from_table`.
Host side (run by the runtime once per step, no device sync): `compute_step_scalars` and
`forecast_step_scalars`, which fill the small per-step vector the device side reads.

Definition (official TaylorSeer code, diffusers' hook): at a computed step s_j with feature F,

    D_0 = F,   D_{i+1} = (D_i(s_j) - D_i(s_{j-1})) / (s_j - s_{j-1})   for i < order,
                                                        while D_i(s_{j-1}) exists;

the new table replaces the old one, so it grows by one order per computed step (the official FLUX
code keeps D_0 alone on the computed steps before its last warm-up step: `orders_to_difference`,
option recursion="official-flux"). At a skipped
step s: F_hat(s) = sum_i D_i (s - s_j)^i / i!. Differences are taken in float32 whatever the
model's dtype; the table is stored in the state dtype.

A table is the rows D_0..D_order, each a tensor of the feature's shape (separate tensors, so the
update of each row is a plain elementwise write that Inductor fuses into the kernel producing the
feature; a stacked table would be built in a temporary and copied). The per-step vector
``scalars`` (float32, length ``2 * order + 4``) holds

    [c_0 .. c_order | dt | has_prev_0 .. has_prev_{order-1} | nonfinite_forecast, nonfinite_computed]

c_i: forecast coefficients (0 past the filled orders), dt: s_j - s_{j-1}, has_prev_i: 1 where
the old table holds D_i. Entries a step does not use are 0. The host writes the first
``2 * order + 2`` entries each step; the last two are device-side counters the graphs add to
(non-finite values met in forecasts, and in features entering the state) and only
`ts_compile.stats` reads.

Time variable: by default s is the step index. With ``time="timestep"|"sigma"`` it is the
sampler's own time, which only the device knows without a sync: the host writes the scalars for a
unit time step and `apply_device_time` scales them by powers of the true difference on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def scalars_length(order: int) -> int:
    """Length of the device vector (host-written entries, then the two counters)."""
    return 2 * order + 4


def host_scalars_length(order: int) -> int:
    return 2 * order + 2


def nonfinite_slots(order: int) -> tuple[int, int]:
    """Indices of the counters: (non-finite forecast values, non-finite computed features)."""
    return 2 * order + 2, 2 * order + 3


def updated_table(table: Sequence[torch.Tensor], feature: torch.Tensor,
                  scalars: torch.Tensor) -> list[torch.Tensor]:
    """The rows D_0..D_order after a computed step that produced `feature` (pure: the caller
    copies each into its row; one row per tensor, so each copy can fuse into the kernel that
    makes `feature`)."""
    order = len(table) - 1
    dt = scalars[order + 1]
    rows = [feature.to(torch.float32)]
    for i in range(order):
        has_prev = scalars[order + 2 + i] > 0
        diff = (rows[i] - table[i].to(torch.float32)) / dt
        # `where`, not a multiply: a missing entry may hold anything (even inf) and dt may be 0.
        rows.append(torch.where(has_prev, diff, torch.zeros_like(diff)))
    return [row.to(old.dtype) for row, old in zip(rows, table)]


def forecast_from_table(table: Sequence[torch.Tensor], scalars: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor:
    """F_hat = sum_i c_i D_i, summed in order like the reference implementations, cast to `dtype`."""
    order = len(table) - 1
    out = table[0].to(torch.float32) * scalars[0]
    for i in range(1, order + 1):
        out = out + table[i].to(torch.float32) * scalars[i]
    return out.to(dtype)


def checked_forecast(table: Sequence[torch.Tensor], scalars: torch.Tensor,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(forecast, finite): where F_hat is not finite (overflow in a half dtype, an inf in a
    derivative) the last computed value D_0 stands in, so a forecast never feeds inf/NaN into
    the next computed step; `finite` marks where F_hat itself was finite, for the counter."""
    out = forecast_from_table(table, scalars, dtype)
    finite = torch.isfinite(out)
    return torch.where(finite, out, table[0].to(dtype)), finite


def counted_nonfinite(scalars: torch.Tensor, slot: int, finite: torch.Tensor) -> torch.Tensor:
    """`scalars` with counter `slot` increased by the number of False in `finite` (pure: the
    caller copies it in; a device-side add, no host sync)."""
    bad = torch.logical_not(finite).sum(dtype=torch.float32)
    return torch.cat([scalars[:slot], (scalars[slot] + bad).reshape(1), scalars[slot + 1:]])


def apply_device_time(scalars: torch.Tensor, now: torch.Tensor, last: torch.Tensor,
                      exponents: torch.Tensor, computed: bool) -> None:
    """Scale the host-written unit-time scalars by the true time difference, on the device.

    The host wrote them for a time step of 1: coefficients 1/i! (forecast) or dt = 1 (computed).
    With delta = now - last (the sampler time since the last computed step), the coefficients
    become delta^i / i! and dt becomes delta. On a computed step `last` then moves to `now`.
    `exponents` is the device vector 0..order (made once per state, not per step).
    """
    order = exponents.shape[0] - 1
    delta = now - last
    if computed:
        scalars[order + 1:order + 2].copy_(delta.reshape(1))
        last.copy_(now)
    else:
        scalars[:order + 1].mul_(torch.pow(delta, exponents))


def time_value(time_input: torch.Tensor, sigma_table: torch.Tensor | None) -> torch.Tensor:
    """The sampler time of this call (0-d float32) from the model's time input, on the device.

    The first element is used (pipelines pass one value per batch row, all equal). With a
    `sigma_table` (sigma per DDPM timestep) the input is a timestep index and sigma is looked up.
    """
    t = time_input.reshape(-1)[0]
    if sigma_table is None:
        return t.to(torch.float32)
    index = t.round().to(torch.long).clamp(0, sigma_table.shape[0] - 1)
    return sigma_table[index]


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DDPM noise level per timestep: sigma_t = sqrt((1 - abar_t) / abar_t)."""
    abar = alphas_cumprod.to(torch.float64)
    return ((1 - abar) / abar).sqrt().to(torch.float32)


def forecast_step_scalars(order: int, offset: int, filled: int) -> list[float]:
    """Scalars for forecasting `offset` steps past the last computed step from `filled` orders."""
    coef = [offset**i / math.factorial(i) if i < filled else 0.0 for i in range(order + 1)]
    return coef + [0.0] * (order + 1)


def orders_to_difference(filled: int, step: int, warmup: int, recursion: str) -> int:
    """How many rows of the old table a computed step at `step` takes differences of.

    "plain": all it holds (`filled`). "official-flux": none before the last warm-up step, so the
    new table is D_0 alone there (official FLUX `derivative_approximation` builds D_{i+1} only
    when ``step > first_enhance - 2``, with first_enhance the warm-up).
    """
    if recursion == "official-flux" and step < warmup - 1:
        return 0
    return filled


def compute_step_scalars(order: int, dt: int, filled: int) -> list[float]:
    """Scalars for a computed step `dt` steps after the previous one, whose table had `filled` orders."""
    has_prev = [1.0 if i < filled else 0.0 for i in range(order)]
    return [0.0] * (order + 1) + [float(dt)] + has_prev


def scalars_vector(host_values: list[float]) -> torch.Tensor:
    """A full device-layout vector from a step's host entries, counters at 0 (tests, tools)."""
    return torch.tensor(host_values + [0.0, 0.0], dtype=torch.float32)
