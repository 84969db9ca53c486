"""The forecast math, in one place: TaylorSeer's and the other forecasters'.

Device side (traced into the compiled graphs): `updated_table` and `forecast_from_table`.
Host side (run by the runtime once per step, no device sync): `Forecaster`, which fills the small
per-step vector the device side reads. A forecaster is only how the host fills that vector: the
graphs, the table and its update are the same for all of them (options.forecaster).

Table update at a computed step s_j with feature F (every forecaster):

    D_0 = F,   D_{i+1} = (D_i(s_j) - D_i(s_{j-1})) / g_i   for i < order, while D_i(s_{j-1}) exists;

the new table replaces the old one, so it grows by one order per computed step (the official FLUX
code keeps D_0 alone on the computed steps before its last warm-up step: `orders_to_difference`,
option recursion="official-flux"). The divisor g_i is where forecasters differ:

    taylor, hermite:  g_i = s_j - s_{j-1}          (TaylorSeer: the latest gap, every row)
    newton:           g_i = s_j - s_{j-i-1}        (true divided differences: D_i = f[s_j..s_{j-i}])

At a skipped step s, with x = s - s_j, the forecast is F_hat(s) = sum_i c_i D_i, where

    taylor:   c_i = x^i / i!                                  (official TaylorSeer code)
    hermite:  c_i = sigma^i H_i(sigma x) / i!                 (HiCache, arXiv 2508.16984:
              physicists' Hermite polynomials H_i, contraction sigma = options.hermite_sigma;
              the form of its code, `F_0 + sum_k (1/k!) H_k(sigma x) sigma^k Delta^k F`,
              default sigma 0.5 in its cache_init "HiCache" mode: github.com/fenglang918/HiCache,
              read here in the copy github.com/yiming-l21/CFGCache, whose README is HiCache's)
    newton:   c_i = prod_{k<i} (s - s_{j-k})                  (Newton's form of the polynomial
              through the last `filled` computed points: exact for polynomial features of
              degree <= order, at any node spacing)

(with uniform spacing TaylorSeer's D_i is i! times the divided difference f[s_j..s_{j-i}], but its
monomials are not Newton's products: "taylor" is exact for degree <= 1 only, "newton" for degree
<= order). The forecasters' state, graphs and layout are the same: only these scalars differ.
Differences are taken in float32 whatever the model's dtype; the table is stored in the state
dtype.

A table is the rows D_0..D_order, each a tensor of the feature's shape (separate tensors, so the
update of each row is a plain elementwise write that Inductor fuses into the kernel producing the
feature; a stacked table would be built in a temporary and copied). The per-step vector
``scalars`` (float32, length ``3 * order + 3``) holds

    [c_0 .. c_order | g_0 .. g_{order-1} | has_prev_0 .. has_prev_{order-1} |
     nonfinite_forecast, nonfinite_computed]

c_i: forecast coefficients (0 past the filled orders), g_i: the divisor of row i + 1, has_prev_i:
1 where the old table holds D_i. Entries a step does not use are 0 (but taylor and hermite write
the latest gap into every g_i, as the single dt of the earlier layout). The host writes the first
``3 * order + 1`` entries each step; the last two are device-side counters the graphs add to
(non-finite values met in forecasts, and in features entering the state) and only
`ts_compile.stats` reads.

Time variable: by default s is the step index. With ``time="timestep"|"sigma"`` it is the
sampler's own time, which only the device knows without a sync: the host writes the scalars for a
unit time step (or masks) and `apply_device_time` makes them from the true times on the device,
for every forecaster (it keeps the last computed steps' times in a small device vector).
"""

from __future__ import annotations

import array
import dataclasses
import math
from collections.abc import Sequence

import torch


def scalars_length(order: int) -> int:
    """Length of the device vector (host-written entries, then the two counters)."""
    return 3 * order + 3


def host_scalars_length(order: int) -> int:
    return 3 * order + 1


def divisor_slot(order: int, row: int) -> int:
    """Index of g_row, the divisor that makes row + 1 on a computed step."""
    return order + 1 + row


def has_prev_slot(order: int, row: int) -> int:
    return 2 * order + 1 + row


def nonfinite_slots(order: int) -> tuple[int, int]:
    """Indices of the counters: (non-finite forecast values, non-finite computed features)."""
    return 3 * order + 1, 3 * order + 2


def updated_table(table: Sequence[torch.Tensor], feature: torch.Tensor,
                  scalars: torch.Tensor) -> list[torch.Tensor]:
    """The rows D_0..D_order after a computed step that produced `feature` (pure: the caller
    copies each into its row; one row per tensor, so each copy can fuse into the kernel that
    makes `feature`)."""
    order = len(table) - 1
    rows = [feature.to(torch.float32)]
    for i in range(order):
        has_prev = scalars[has_prev_slot(order, i)] > 0
        diff = (rows[i] - table[i].to(torch.float32)) / scalars[divisor_slot(order, i)]
        # `where`, not a multiply: a missing entry may hold anything (even inf) and g_i may be 0.
        rows.append(torch.where(has_prev, diff, torch.zeros_like(diff)))
    return [row.to(old.dtype) for row, old in zip(rows, table)]


def row_norms(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each row of a table (in float32), as one vector: what the compute graph
    returns with options.adaptive (`ts_compile.adaptive`: the host's truncation estimate)."""
    return torch.stack([torch.linalg.vector_norm(row.to(torch.float32)) for row in rows])


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


def apply_device_time(scalars: torch.Tensor, now: torch.Tensor, times: torch.Tensor,
                      exponents: torch.Tensor, computed: bool, forecaster: str = "taylor",
                      basis: torch.Tensor | None = None) -> None:
    """Make the step's scalars from the true sampler times, on the device (no host sync).

    The host wrote them for a unit time step (`Forecaster` with ``unit_time=True``). `times`
    holds the times of the table's computed steps, newest first (length max(order, 1); entries
    past the filled ones are stale and masked by the host's zeros); `exponents` is the vector
    0..order; `basis` (hermite) is `hermite_basis` as a tensor. All are made once per state or
    graph, not per step. With delta = now - times[0]:

    computed: g_i = delta (taylor, hermite) or now - times[i] (newton); the new step's time
              then enters `times` (newest first).
    forecast: the host's 1/i! become delta^i / i! (taylor); its masks (1 up to the filled
              orders) are multiplied by sigma^i H_i(sigma delta) / i! (hermite, via `basis`)
              or prod_{k<i} (now - times[k]) (newton).
    """
    order = exponents.shape[0] - 1
    last = times[:1]
    delta = now - last
    if computed:
        if order and forecaster == "newton":  # 0 where the old table has no row (as the host)
            gaps = now - times[:order]
            has_prev = scalars[2 * order + 1:3 * order + 1] > 0
            divisors = torch.where(has_prev, gaps, torch.zeros_like(gaps))
            scalars[order + 1:2 * order + 1].copy_(divisors)
        elif order:
            scalars[order + 1:2 * order + 1].copy_(delta.expand(order))
        if forecaster == "newton" and times.shape[0] > 1:
            times[1:].copy_(times[:-1].clone())
        last.copy_(now.reshape(1))
    elif forecaster == "taylor":
        scalars[:order + 1].mul_(torch.pow(delta, exponents))
    elif forecaster == "hermite":
        scalars[:order + 1].mul_((basis * torch.pow(delta, exponents)).sum(dim=1))
    else:  # newton
        products = torch.cumprod(now - times[:order], dim=0)
        scalars[1:order + 1].mul_(products)


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
    """Scalars for forecasting `offset` steps past the last computed step from `filled` orders
    (taylor)."""
    coef = [offset**i / math.factorial(i) if i < filled else 0.0 for i in range(order + 1)]
    return coef + [0.0] * (2 * order)


def hermite_polynomial(n: int, y: float) -> float:
    """The physicists' Hermite polynomial H_n(y): H_0 = 1, H_1 = 2y,
    H_{k+1} = 2y H_k - 2k H_{k-1}."""
    previous, current = 0.0, 1.0
    for k in range(n):
        previous, current = current, 2 * y * current - 2 * k * previous
    return current


def hermite_coefficients(order: int, offset: float, filled: int, sigma: float) -> list[float]:
    """HiCache's c_i = sigma^i H_i(sigma x) / i! at x = `offset`, 0 past the filled orders."""
    return [sigma**i * hermite_polynomial(i, sigma * offset) / math.factorial(i)
            if i < filled else 0.0 for i in range(order + 1)]


def hermite_basis(order: int, sigma: float) -> list[list[float]]:
    """B with c_i(x) = sum_m B[i][m] x^m for HiCache's c_i (`hermite_coefficients`), so that the
    device can evaluate them at a time difference only it knows (`apply_device_time`)."""
    powers = [[1.0]]  # H_n as coefficients of y^0..y^n, by the same recurrence
    for k in range(order):
        nxt = [0.0] + [2 * c for c in powers[k]]
        for m, c in enumerate(powers[k - 1] if k else []):
            nxt[m] -= 2 * k * c
        powers.append(nxt)
    return [[sigma**i * (powers[i][m] * sigma**m if m <= i else 0.0) / math.factorial(i)
             for m in range(order + 1)] for i in range(order + 1)]


def newton_coefficients(order: int, now: float, nodes: Sequence[float],
                        filled: int) -> list[float]:
    """Newton's c_i = prod_{k<i} (now - nodes[k]) (nodes: the table's computed steps' times,
    newest first), 0 past the filled orders."""
    coef, product = [], 1.0
    for i in range(order + 1):
        coef.append(product if i < filled else 0.0)
        if i < filled - 1:
            product *= now - nodes[i]
    return coef


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
    """Scalars for a computed step `dt` steps after the previous one, whose table had `filled`
    orders (taylor, hermite: every row divided by the latest gap)."""
    has_prev = [1.0 if i < filled else 0.0 for i in range(order)]
    return [0.0] * (order + 1) + [float(dt)] * order + has_prev


def newton_compute_step_scalars(order: int, now: float, nodes: Sequence[float],
                                filled: int) -> list[float]:
    """Scalars for a computed step at time `now` after the computed steps at `nodes` (newest
    first), differencing `filled` rows: row i + 1 divided by now - nodes[i]."""
    has_prev = [1.0 if i < filled else 0.0 for i in range(order)]
    divisors = [float(now - nodes[i]) if i < filled else 0.0 for i in range(order)]
    return [0.0] * (order + 1) + divisors + has_prev


@dataclasses.dataclass(frozen=True)
class Forecaster:
    """How the host fills the scalars each step (options.forecaster): the one place the runtime
    asks, so every forecaster runs the same graphs and state.

    `unit_time`: the time is read on the device (options.time != "step"); the host then writes
    unit-step values and masks, and `apply_device_time` completes them.
    """

    kind: str  # options.FORECASTERS
    order: int
    sigma: float = 0.5  # hermite only
    unit_time: bool = False
    # A forecast step's scalars by what they depend on (`_forecast_key`): a generation repeats
    # the same few, so the per-step host work is one dict lookup. Each entry holds the values as
    # a list and packed as float32 (what the runtime copies as raw memory). Shared: not to be
    # edited.
    _forecasts: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                         compare=False)

    def compute_scalars(self, step: int, nodes: Sequence[int], rows: int) -> list[float]:
        """A computed step at `step`; `nodes`: the table's computed steps, newest first;
        `rows`: how many rows of the old table it differences (`orders_to_difference`)."""
        if self.unit_time:
            return compute_step_scalars(self.order, 1, rows)
        if self.kind == "newton":
            return newton_compute_step_scalars(self.order, step, nodes, rows)
        return compute_step_scalars(self.order, step - nodes[0] if nodes else 0, rows)

    def forecast_scalars(self, step: int, nodes: Sequence[int], filled: int) -> list[float]:
        """A forecast step at `step` from a table of `filled` orders made at `nodes` (a list
        shared with later calls: do not modify it)."""
        return self._forecast_entry(step, nodes, filled)[0]

    def forecast_scalars_f32(self, step: int, nodes: Sequence[int], filled: int) -> array.array:
        """`forecast_scalars` packed as float32 (`TaylorState.write_scalars` copies it as raw
        memory on CPU: the cheapest write of a forecast step)."""
        return self._forecast_entry(step, nodes, filled)[1]

    def _forecast_entry(self, step: int, nodes: Sequence[int],
                        filled: int) -> tuple[list[float], array.array]:
        key = self._forecast_key(step, nodes, filled)
        found = self._forecasts.get(key)
        if found is None:
            values = self._forecast_scalars(step, nodes, filled)
            found = self._forecasts[key] = values, array.array("f", values)
        return found

    def coefficients_at(self, at: float, nodes: Sequence[float], filled: int) -> list[float]:
        """c_0..c_order at time `at` from computed times `nodes` (newest first), in any time
        unit and without the cache (options.adaptive's estimate from host-side sampler times;
        only for a forecaster made with unit_time=False)."""
        return self._forecast_scalars(at, nodes, filled)[:self.order + 1]

    def _forecast_key(self, step: int, nodes: Sequence[int], filled: int) -> tuple:
        """What a forecast step's scalars depend on: the filled orders and the distances to the
        computed steps the coefficients read (none in sampler time: the device has them)."""
        if self.unit_time:
            return (filled,)
        if self.kind == "newton":
            return (filled, *(step - node for node in nodes[:filled - 1]))
        return filled, step - nodes[0]

    def _forecast_scalars(self, step: int, nodes: Sequence[int], filled: int) -> list[float]:
        order, kind = self.order, self.kind
        if kind == "taylor":
            return forecast_step_scalars(order, 1 if self.unit_time else step - nodes[0], filled)
        if self.unit_time:  # masks: the device multiplies in the time-dependent factors
            coef = [1.0 if i < filled else 0.0 for i in range(order + 1)]
        elif kind == "hermite":
            coef = hermite_coefficients(order, step - nodes[0], filled, self.sigma)
        else:
            coef = newton_coefficients(order, step, nodes, filled)
        return coef + [0.0] * (2 * order)

    def device_basis(self, device: torch.device) -> torch.Tensor | None:
        """What `apply_device_time` needs besides the times (hermite: `hermite_basis`)."""
        if self.kind != "hermite":
            return None
        return torch.tensor(hermite_basis(self.order, self.sigma), dtype=torch.float32,
                            device=device)


def scalars_vector(host_values: list[float]) -> torch.Tensor:
    """A full device-layout vector from a step's host entries, counters at 0 (tests, tools)."""
    return torch.tensor(host_values + [0.0, 0.0], dtype=torch.float32)
