"""Independent eager reference implementation of TaylorSeer feature forecasting.

This module is the *ground truth* that the compiled ``ts_compile`` backend is
compared against in the tests.  It is intentionally written plainly, with no
attempt at efficiency or cleverness, and it does not import anything from
``ts_compile``.

Algorithm (per listed module, per output tensor of that module)
----------------------------------------------------------------
Step index ``s`` counts calls since construction / ``reset()`` (0-based).

* Computed step ``s`` (``computed(s)`` is True, or no computed step has
  happened yet since reset): the model runs normally.  The output ``F`` of each
  listed module is captured with a forward hook and its table is updated, in
  float32, from the previous table ``old`` (made at computed step ``s_prev``)::

      new[0] = F.float()
      for i in range(order):
          if i < len(old):
              new[i + 1] = (new[i] - old[i]) / (s - s_prev)
          else:
              break

  The new table replaces the old one, so it holds 1 entry after the first
  computed step, 2 after the second, ... capped at ``order + 1``.

* Forecast step ``s`` (last computed step ``s_j``): each listed module's
  ``forward`` is temporarily replaced by a function returning::

      F_hat = sum_i table[i] * ((s - s_j) ** i / math.factorial(i))

  computed in float32 with a Python float coefficient, then cast to the dtype
  the module's output had when it was captured.  The structure (a tensor, or a
  tuple / list of tensors) is the same as the captured output.

Note that this lagged-difference recursion forecasts constant (order >= 0)
and linear (order >= 1) trajectories exactly, but not quadratics or higher,
because the differences are taken between consecutive *computed* steps.

Other forecasters (``forecaster=``), written from their definitions:

* ``"hermite"`` (HiCache, arXiv 2508.16984): the same table, and the forecast
  ``F_hat = table[0] + sum_{k>=1} table[k] * sigma**k * H_k(sigma * (s - s_j)) / k!``
  with the physicists' Hermite polynomial from its explicit sum
  ``H_n(y) = n! * sum_{m <= n/2} (-1)**m (2y)**(n - 2m) / (m! (n - 2m)!)``.
* ``"newton"``: the polynomial through the last ``order + 1`` computed points
  ``(t_j, F_j)`` (fewer right after a reset), in Lagrange's form:
  ``F_hat(s) = sum_j F_j * prod_{m != j} (s - t_m) / (t_j - t_m)``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = ["EagerTaylorSeer", "official_schedule", "adaptive_schedule"]


def official_schedule(
    warmup: int,
    interval: int,
    cooldown: int = 0,
    num_steps: Optional[int] = None,
) -> Callable[[int], bool]:
    """Return the TaylorSeer "official" schedule as a predicate ``step -> bool``.

    Step ``s`` is computed iff ``s < warmup``, or
    ``(s - (warmup - 1)) % interval == 0``, or
    (``num_steps`` is given and ``s >= num_steps - cooldown``).
    """
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")

    def computed(s: int) -> bool:
        if s < warmup:
            return True
        if (s - (warmup - 1)) % interval == 0:
            return True
        if num_steps is not None and s >= num_steps - cooldown:
            return True
        return False

    return computed


def adaptive_schedule(
    tolerance: float,
    min_interval: int,
    max_interval: int,
    warmup: int = 1,
    cooldown: int = 0,
    num_steps: Optional[int] = None,
) -> dict:
    """The adaptive rule's settings for ``EagerTaylorSeer(adaptive=...)``.

    Step ``s`` is computed iff nothing was computed yet, ``s < warmup``, ``s``
    is one of the last ``cooldown`` of ``num_steps``, ``s - last >= max_interval``,
    or ``s - last >= min_interval`` and the truncation estimate at ``s`` is not
    ``<= tolerance``.  With ``num_steps`` given, no cooldown and step time, the
    last step ``n - 1`` is decided at ``n - 2``: if that rule computes ``n - 1``
    (with ``last`` as at ``n - 2``), ``n - 2`` is computed instead and ``n - 1``
    forecast.  The estimate, from this module's own tables in float64:
    the max over listed modules and outputs of ``||D_k|| * |c_k(s)| / ||D_0||``,
    ``k`` the highest entry of the table and ``c_k`` the forecast's coefficient
    of it (for ``"newton"``: ``D_k`` the divided difference over the last
    ``k + 1`` points and ``c_k = prod_{m<k} (s - t_{j-m})``).
    """
    return dict(tolerance=float(tolerance), min_interval=int(min_interval),
                max_interval=int(max_interval), warmup=int(warmup), cooldown=int(cooldown),
                num_steps=num_steps)


class EagerTaylorSeer:
    """Eager TaylorSeer wrapper around ``model`` (see the module docstring).

    Args:
        model: the network; each call ``self(*args, **kwargs)`` is one
            denoising step and calls ``model(*args, **kwargs)``.
        module_paths: dotted submodule paths (as in ``model.get_submodule``)
            whose outputs are cached / forecast.
        order: Taylor order, 0..4.
        computed: predicate ``step_index -> bool``; True means the listed
            modules are run for real at that step.
        time_of: optional ``(args, kwargs) -> float``: the variable the
            polynomial is in (e.g. the timestep argument as a Python float).
            Default: the step index ``s``. Differences and powers then use
            these values (in float64 on the host) instead of step indices.

    Attributes (for inspection by tests):
        tables: ``{path: [per-output list of float32 tensors]}``; i.e.
            ``tables[path][k][i]`` is the i-th table entry of output ``k``.
        computed_steps: list of the step indices that were computed.
        step: number of calls since construction / reset.
        last_computed: index of the last computed step (None if none yet).
        out_kinds: ``{path: "tensor" | "tuple" | "list"}`` structure of the
            captured output.
        out_dtypes: ``{path: [dtype per output]}`` as captured.
    """

    def __init__(
        self,
        model: nn.Module,
        module_paths: List[str],
        order: int,
        computed: Callable[[int], bool],
        time_of: Optional[Callable[[tuple, dict], float]] = None,
        forecaster: str = "taylor",
        sigma: float = 0.5,
        adaptive: Optional[dict] = None,
        estimate_paths: Optional[List[str]] = None,
        fresh_before: int = 0,
        estimate_outputs: Optional[List[int]] = None,
    ):
        if not (0 <= int(order) <= 4):
            raise ValueError(f"order must be in 0..4, got {order}")
        self.model = model
        self.module_paths = list(module_paths)
        self.order = int(order)
        self.computed = computed
        self.time_of = time_of
        if forecaster not in ("taylor", "hermite", "newton"):
            raise ValueError(f"unknown forecaster {forecaster!r}")
        self.forecaster = forecaster
        self.sigma = float(sigma)
        # adaptive_schedule(...): steps chosen by the truncation estimate (`computed` unused)
        self.adaptive = adaptive
        # the modules whose tables the estimate reads (default: all listed)
        self.estimate_paths = list(module_paths if estimate_paths is None else estimate_paths)
        # which outputs of those modules it reads (default: all; a block returning a tuple whose
        # other outputs nothing reads afterwards)
        self.estimate_outputs = None if estimate_outputs is None else list(estimate_outputs)
        # a computed step before this step index starts its table afresh (D_0 alone; newton: its
        # newest point alone): the official FLUX code's warm-up guard, which builds the higher
        # rows only from step first_enhance - 1 on
        self.fresh_before = int(fresh_before)
        self.modules: Dict[str, nn.Module] = {
            p: model.get_submodule(p) for p in self.module_paths
        }
        self.reset()

    def reset(self) -> None:
        """Forget all tables and restart the step counter at 0."""
        self.tables: Dict[str, List[List[torch.Tensor]]] = {}
        # newton: per path, per output, the last order + 1 computed (time, value), newest last
        self.points: Dict[str, List[List[tuple]]] = {}
        self.out_kinds: Dict[str, str] = {}
        self.out_dtypes: Dict[str, List[torch.dtype]] = {}
        self.computed_steps: List[int] = []
        self.last_computed: Optional[int] = None
        self.last_computed_time: Optional[float] = None
        self.step: int = 0
        # adaptive: (step, estimate) of every step the estimate decided
        self.estimates: List[tuple] = []
        self.last_moved = False  # adaptive: the last step's compute taken one step early

    # ------------------------------------------------------------------ #
    # helpers
    # ------------------------------------------------------------------ #
    @staticmethod
    def _split_output(path, out):
        """Return (kind, list_of_tensors) for a module output."""
        if isinstance(out, torch.Tensor):
            return "tensor", [out]
        if isinstance(out, (tuple, list)):
            for o in out:
                if not isinstance(o, torch.Tensor):
                    raise TypeError(
                        f"module {path!r} returned a {type(out).__name__} "
                        f"containing a {type(o).__name__}; only tensors are supported"
                    )
            return ("tuple" if isinstance(out, tuple) else "list"), list(out)
        raise TypeError(
            f"module {path!r} returned {type(out).__name__}; expected a tensor "
            "or a tuple/list of tensors"
        )

    def _update_table(self, path: str, outputs: List[torch.Tensor], s: float,
                      fresh: bool = False) -> None:
        old_tables = None if fresh else self.tables.get(path)
        s_prev = self.last_computed_time
        new_tables = []
        for k, F in enumerate(outputs):
            old = old_tables[k] if old_tables is not None else []
            new = [F.detach().float().clone()]
            for i in range(self.order):
                if i < len(old):
                    new.append((new[i] - old[i]) / (s - s_prev))
                else:
                    break
            new_tables.append(new)
        self.tables[path] = new_tables
        old_points = None if fresh else self.points.get(path)
        self.points[path] = [
            ((old_points[k] if old_points is not None else []) + [(s, F.detach().float().clone())])
            [-(self.order + 1):]
            for k, F in enumerate(outputs)
        ]

    def forecast(self, path: str, s: float):
        """Forecast of module ``path``'s output at time ``s`` (same structure
        and dtypes as the captured output)."""
        s_j = self.last_computed_time
        results = []
        for k, table in enumerate(self.tables[path]):
            acc = torch.zeros_like(table[0])
            if self.forecaster == "newton":
                points = self.points[path][k]
                for j, (t_j, value) in enumerate(points):
                    weight = 1.0  # Lagrange basis polynomial L_j(s), a python float
                    for m, (t_m, _) in enumerate(points):
                        if m != j:
                            weight *= (s - t_m) / (t_j - t_m)
                    acc = acc + value * weight
            for i in range(len(table) if self.forecaster != "newton" else 0):
                x = s - s_j
                if self.forecaster == "hermite":
                    coef = self.sigma ** i * _hermite(i, self.sigma * x) / math.factorial(i)
                else:
                    coef = x ** i / math.factorial(i)  # python float
                acc = acc + table[i] * coef
            results.append(acc.to(self.out_dtypes[path][k]))
        kind = self.out_kinds[path]
        if kind == "tensor":
            return results[0]
        if kind == "tuple":
            return tuple(results)
        return list(results)

    # ------------------------------------------------------------------ #
    # one denoising step
    # ------------------------------------------------------------------ #
    def __call__(self, *args, **kwargs):
        s = self.step
        tau = float(s) if self.time_of is None else float(self.time_of(args, kwargs))
        if self.adaptive is not None:
            do_compute = self._adaptive_compute(s, tau)
        else:
            do_compute = self.last_computed is None or bool(self.computed(s))
        with torch.no_grad():
            if do_compute:
                out = self._computed_step(s, tau, args, kwargs)
            else:
                out = self._forecast_step(tau, args, kwargs)
        self.step += 1
        return out

    def _adaptive_compute(self, s: int, tau: float) -> bool:
        a = self.adaptive
        if self.last_computed is None or s < a["warmup"]:
            return True
        n = a["num_steps"]
        if n is not None and s >= n - a["cooldown"]:
            return True
        # step time, a known length, no cooldown: the last step is decided one step early
        ahead = n is not None and not a["cooldown"] and self.time_of is None
        if ahead and s == n - 1 and self.last_moved and self.last_computed == s - 1:
            return False
        if self._interval_rule(s, tau):
            return True
        if ahead and s == n - 2 and self._interval_rule(n - 1, float(n - 1)):
            self.last_moved = True
            return True
        return False

    def _interval_rule(self, s: int, tau: float) -> bool:
        a = self.adaptive
        gap = s - self.last_computed
        if gap >= a["max_interval"]:
            return True
        if gap < a["min_interval"]:
            return False
        estimate = self.truncation_estimate(tau)
        self.estimates.append((s, estimate))
        return not estimate <= a["tolerance"]

    def truncation_estimate(self, s: float) -> float:
        """max over modules and outputs of ||D_k|| |c_k(s)| / ||D_0||, in float64."""
        worst = 0.0
        x = s - self.last_computed_time
        for path in self.estimate_paths:
            for k_out, table in enumerate(self.tables[path]):
                if self.estimate_outputs is not None and k_out not in self.estimate_outputs:
                    continue
                k = len(table) - 1
                base = table[0].double().norm().item()
                if self.forecaster == "newton":
                    points = self.points[path][k_out][-(k + 1):]  # newest last
                    top = _divided_difference(points).norm().item()
                    coef = 1.0
                    for t_m, _ in list(reversed(points))[:k]:
                        coef *= s - t_m
                else:
                    top = table[k].double().norm().item()
                    if self.forecaster == "hermite":
                        coef = self.sigma ** k * _hermite(k, self.sigma * x) / math.factorial(k)
                    else:
                        coef = x ** k / math.factorial(k)
                if base > 0:
                    value = top * abs(coef) / base
                else:
                    value = 0.0 if top * abs(coef) == 0 else math.inf
                if math.isnan(value):
                    return value
                worst = max(worst, value)
        return worst

    def _computed_step(self, s, tau, args, kwargs):
        captured: Dict[str, object] = {}
        handles = []

        def make_hook(path):
            def hook(module, inputs, output):
                if path in captured:
                    raise RuntimeError(
                        f"module {path!r} was called more than once in one step"
                    )
                # The value as the module returned it: code after the module may write
                # into that tensor in place, and the table holds what the module produced.
                captured[path] = _cloned(output)

            return hook

        try:
            for path, module in self.modules.items():
                handles.append(module.register_forward_hook(make_hook(path)))
            out = self.model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()

        for path in self.module_paths:
            if path not in captured:
                raise RuntimeError(f"module {path!r} was not called during step {s}")
            kind, outputs = self._split_output(path, captured[path])
            self._update_table(path, outputs, tau, fresh=s < self.fresh_before)
            self.out_kinds[path] = kind
            self.out_dtypes[path] = [o.dtype for o in outputs]

        self.last_computed = s
        self.last_computed_time = tau
        self.computed_steps.append(s)
        return out

    def _forecast_step(self, tau, args, kwargs):
        forecasts = {path: self.forecast(path, tau) for path in self.module_paths}
        saved = {}
        try:
            for path, module in self.modules.items():
                # remember whether the instance had its own `forward` attribute
                saved[path] = module.__dict__.get("forward", _MISSING)

                def fake_forward(*a, _value=forecasts[path], **k):
                    return _value

                module.forward = fake_forward
            return self.model(*args, **kwargs)
        finally:
            for path, module in self.modules.items():
                if path not in saved:
                    continue
                prev = saved[path]
                if prev is _MISSING:
                    del module.forward
                else:
                    module.forward = prev


_MISSING = object()


def _hermite(n: int, y: float) -> float:
    """Physicists' Hermite polynomial H_n(y), from its explicit sum (not a recurrence)."""
    return math.factorial(n) * sum(
        (-1) ** m * (2 * y) ** (n - 2 * m) / (math.factorial(m) * math.factorial(n - 2 * m))
        for m in range(n // 2 + 1)
    )


def _divided_difference(points):
    """f[t_0, ..., t_n] in float64 from (t, value) points, by its recursive definition."""
    if len(points) == 1:
        return points[0][1].double()
    return ((_divided_difference(points[1:]) - _divided_difference(points[:-1]))
            / (points[-1][0] - points[0][0]))


def _cloned(output):
    """Tensors (alone or in a tuple/list) copied; anything else as it is."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, (tuple, list)):
        return type(output)(_cloned(o) for o in output)
    return output
