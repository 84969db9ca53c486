"""The backend's settings: one typed, validated dataclass.

`torch.compile(model, backend="taylorseer", options={...})` hands the dict here unchecked; every
bad value is rejected with an error naming the option, the value and what is allowed, before any
compilation starts. Keys that are not TaylorSeer settings but are Inductor config keys pass through
to Inductor (``torch.compile`` refuses ``mode=`` together with ``options=``, so the Inductor mode
and config must be expressible inside ``options``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, Union

import torch

MAX_ORDER = 4
CUTS = ("block", "paper")  # named cuts; anything else must be a list of regular expressions
COMPILERS = ("inductor", "eager")  # ours; any other registered Dynamo backend name works too
STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INDUCTOR_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TIMES = ("step", "timestep", "sigma")
# How the derivative table is rebuilt on a computed step (`ts_compile.taylor`): "plain" at every
# computed step (the official DiT and HunyuanVideo code, diffusers' hook); "official-flux" like
# the official FLUX code, which keeps D_0 alone on the computed steps before the last warm-up step.
RECURSIONS = ("plain", "official-flux")
# How a forecast step combines the table's rows (`ts_compile.taylor`): "taylor" (TaylorSeer's
# monomials), "hermite" (HiCache's scaled Hermite basis) or "newton" (the polynomial through the
# last order + 1 computed points, exactly). All share the one state layout and both graphs.
FORECASTERS = ("taylor", "hermite", "newton")
HERMITE_SIGMA = 0.5  # HiCache's default contraction factor (its code's "HiCache" mode)
# The official TaylorSeer code's settings and recursion per model (Shenyi-Z/TaylorSeer @288776d:
# each code's cache_init "Taylor" mode / CLI defaults); any option given beside a preset wins.
PRESETS: dict[str, dict[str, Any]] = {
    "official-flux": dict(interval=6, order=1, warmup=3, recursion="official-flux"),
    "official-dit": dict(interval=4, order=4, warmup=2, recursion="plain"),
    "official-hunyuan": dict(interval=5, order=1, warmup=1, recursion="plain"),
}


class OptionError(ValueError):
    """A TaylorSeer option has a value that is not allowed."""


DEFAULT_MIN_INTERVAL = 5  # AdaptiveOptions.min_interval when not given (capped by max_interval)


@dataclasses.dataclass(frozen=True)
class AdaptiveOptions:
    """options.adaptive: computed steps chosen per step from the forecast's own error estimate
    (`ts_compile.adaptive`) instead of `interval`.

    tolerance:    compute when the estimated relative truncation error of the next forecast
                  exceeds this (>= 0; 0: every min_interval-th step, inf: every max_interval-th).
    min_interval: never compute again sooner than this many steps after a computed step (>= 1;
                  None: the smaller of 5 and max_interval). 5 as the fixed schedule's interval:
                  with 1, the step after the first computed one is always computed too (one
                  row: the estimate is 1), and in the quality study min 5 / max 8 beat min 1 /
                  max 10 at 6x and beyond on both models (docs/quality.md).
    max_interval: always compute again this many steps after a computed step (>= min_interval).
    """

    tolerance: float = 0.05
    min_interval: int | None = None
    max_interval: int = 8

    def __post_init__(self) -> None:
        tol = self.tolerance
        if (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or math.isnan(float(tol))
                or float(tol) < 0):
            _fail("adaptive.tolerance", tol, "a float >= 0 (the relative truncation error "
                  "that triggers a computed step, e.g. 0.05; float('inf') for every "
                  "max_interval-th step)")
        object.__setattr__(self, "tolerance", float(tol))
        high = _check_int("adaptive.max_interval", self.max_interval, 1)
        low = (min(DEFAULT_MIN_INTERVAL, high) if self.min_interval is None
               else _check_int("adaptive.min_interval", self.min_interval, 1))
        if high < low:
            _fail("adaptive.max_interval", high, f"an int >= adaptive.min_interval={low}")
        object.__setattr__(self, "min_interval", low)
        object.__setattr__(self, "max_interval", high)

    @classmethod
    def coerce(cls, value: Any) -> AdaptiveOptions | None:
        if value is None or isinstance(value, cls):
            return value
        allowed = ("None, or a dict with keys tolerance, min_interval, max_interval "
                   "(e.g. {'tolerance': 0.05, 'min_interval': 5, 'max_interval': 8}) or a "
                   "ts_compile.AdaptiveOptions")
        if not isinstance(value, Mapping):
            _fail("adaptive", value, allowed)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields, key=str)
        if unknown:
            _fail("adaptive", dict(value), f"{allowed}; unknown key(s) {unknown}")
        return cls(**value)


def _fail(name: str, value: Any, allowed: str) -> None:
    raise OptionError(f"ts_compile: option {name!r}={value!r} is invalid; allowed: {allowed}.")


def _is_int(value: Any) -> bool:
    """An int, or an integer of another library (numpy, a 0-d integer tensor); not a bool."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """The value as a Python int, if it is an integer in range."""
    allowed = f"an int >= {low}" if high is None else f"an int in {low}..{high}"
    if not _is_int(value):
        _fail(name, value, allowed)
    value = int(value)
    if value < low or (high is not None and value > high):
        _fail(name, value, allowed)
    return value


@dataclasses.dataclass(frozen=True)
class TaylorSeerOptions:
    """What to forecast, when, and how to compile it.

    order:      Taylor order 0..4 (0 = reuse the last computed output, i.e. FORA).
    interval:   N >= 1; after warm-up every N-th step is computed.
    warmup:     steps computed at the start of every generation (>= 1).
    cooldown:   steps computed at the end (needs num_steps).
    num_steps:  steps per generation; when known the state resets by itself after the last step.
    schedule:   explicit computed step indices; overrides interval/warmup/cooldown.
    cut:        "block" (forecast each transformer block's outputs), "paper" (the paper's cut:
                each attention/MLP branch output before its gate) or regular expressions over
                module paths (forecast the outputs of the matching submodules).
    compiler:   the inner compiler of both rewritten graphs: "inductor", "eager" (run them as
                they are: debugging, tests), the name of any other registered Dynamo backend
                ("openvino", "tensorrt", ...) or a callable `(gm, example_inputs) -> fn` (a
                Dynamo backend, e.g. one with its options bound by functools.partial).
    state_dtype: dtype of the Taylor state ("float32" unless memory demands otherwise).
    mode:       Inductor mode ("reduce-overhead" captures both graphs as CUDA graphs on GPU).
    inductor_config: extra Inductor config patches.
    time:       the variable the polynomial is in: "step" (the step index, as the paper),
                "timestep" (the model's time input as it receives it; for flow-matching models
                such as FLUX this already is sigma) or "sigma" (DDPM-family models: the noise
                level sqrt((1 - abar) / abar) of the timestep input; needs alphas_cumprod). Read
                on the device: no host sync.
    time_input: name of the forward argument holding the time ("timestep").
    alphas_cumprod: the scheduler's cumulative alphas, one per training timestep, for
                time="sigma" (e.g. ``pipe.scheduler.alphas_cumprod.tolist()``).
    recursion:  "plain" (differences on every computed step) or "official-flux" (D_0 alone on
                the computed steps before the last warm-up step, as the official FLUX code).
    forecaster: how a forecast step combines the rows: "taylor" (TaylorSeer, the default),
                "hermite" (HiCache's scaled Hermite basis over the same rows) or "newton" (the
                polynomial through the last order + 1 computed points, in the time variable,
                exact for any spacing). See docs/options.md for when to pick which.
    hermite_sigma: HiCache's contraction factor sigma in (0, 1] (default 0.5); only with
                forecaster="hermite".
    adaptive:   None (the default: the fixed schedule above), or the computed steps chosen per
                step from the forecast's truncation-error estimate: an `AdaptiveOptions` or a
                dict {"tolerance": 0.05, "min_interval": 5, "max_interval": 8}; replaces
                `interval` (warmup, cooldown still apply); needs order >= 1, no `schedule`.
    preset:     the official code's settings for a model, "official-flux", "official-dit" or
                "official-hunyuan" (see PRESETS); options given beside it win. Applied by
                `from_compile_kwargs` / `from_preset`; on the dataclass it is a label.
    """

    order: int = 2
    interval: int = 5
    warmup: int = 1  # chosen from docs/quality.md: best fidelity at ~5x on both trained models
    cooldown: int = 0
    num_steps: int | None = None
    schedule: frozenset[int] | None = None
    cut: str | tuple[str, ...] = "block"
    compiler: Union[str, Callable[..., Any]] = "inductor"
    state_dtype: str = "float32"
    mode: str | None = None
    inductor_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    time: Literal["step", "timestep", "sigma"] = "step"
    time_input: str = "timestep"
    alphas_cumprod: tuple[float, ...] | None = None
    recursion: Literal["plain", "official-flux"] = "plain"
    forecaster: Literal["taylor", "hermite", "newton"] = "taylor"
    hermite_sigma: float = HERMITE_SIGMA
    adaptive: AdaptiveOptions | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        for name, low, high in (("order", 0, MAX_ORDER), ("interval", 1, None), ("warmup", 1, None),
                                ("cooldown", 0, None)):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), low, high))
        if self.num_steps is not None:
            object.__setattr__(self, "num_steps", _check_int("num_steps", self.num_steps, 1))
        if self.cooldown and self.num_steps is None:
            _fail("cooldown", self.cooldown, "0 unless num_steps is given (the end must be known)")
        if self.schedule is not None:
            self._check_schedule()
        self._check_cut()
        self._check_compiler()
        if self.state_dtype not in STATE_DTYPES:
            _fail("state_dtype", self.state_dtype, ", ".join(map(repr, STATE_DTYPES)))
        if self.mode is not None and self.mode not in INDUCTOR_MODES:
            _fail("mode", self.mode, ", ".join(map(repr, INDUCTOR_MODES)))
        self._check_time()
        if self.recursion not in RECURSIONS:
            _fail("recursion", self.recursion, ", ".join(map(repr, RECURSIONS)))
        self._check_forecaster()
        self._check_adaptive()
        if self.preset is not None and self.preset not in PRESETS:
            _fail("preset", self.preset, ", ".join(map(repr, PRESETS)))

    def _check_compiler(self) -> None:
        compiler = self.compiler
        if callable(compiler) or compiler in COMPILERS:
            return
        allowed = ("'inductor', 'eager', the name of a registered Dynamo backend "
                   "(torch._dynamo.list_backends(exclude_tags=())) or a callable "
                   "(gm, example_inputs) -> fn")
        if not isinstance(compiler, str) or compiler == "taylorseer":  # itself: no recursion
            _fail("compiler", compiler, allowed)
        from torch._dynamo.backends.registry import lookup_backend

        try:  # also imports backends registered by entry point (e.g. openvino's)
            lookup_backend(compiler)
        except Exception as err:  # noqa: BLE001 - InvalidBackend, or the backend's import failed
            _fail("compiler", compiler, f"{allowed} ({type(err).__name__}: {err})")

    def _check_time(self) -> None:
        if self.time not in TIMES:
            _fail("time", self.time, ", ".join(map(repr, TIMES)))
        if not isinstance(self.time_input, str) or not self.time_input.isidentifier():
            _fail("time_input", self.time_input, "the name of a forward argument, e.g. 'timestep'")
        abar = self.alphas_cumprod
        if self.time == "sigma" and abar is None:
            _fail("alphas_cumprod", abar, "the scheduler's cumulative alphas when time='sigma' "
                  "(e.g. pipe.scheduler.alphas_cumprod.tolist()); for flow-matching models "
                  "(FLUX, SD3, Wan, HunyuanVideo) the timestep input already is sigma: use "
                  "time='timestep'")
        if abar is None:
            return
        if self.time != "sigma":
            _fail("alphas_cumprod", "[...]", "None unless time='sigma' (it is only used there)")
        if isinstance(abar, torch.Tensor):
            abar = abar.tolist()
        if (not isinstance(abar, Collection) or isinstance(abar, (str, bytes)) or not abar
                or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 1
                       for a in abar)):
            _fail("alphas_cumprod", "[...]", "a non-empty sequence of floats in (0, 1]")
        object.__setattr__(self, "alphas_cumprod", tuple(float(a) for a in abar))

    def _check_forecaster(self) -> None:
        if self.forecaster not in FORECASTERS:
            _fail("forecaster", self.forecaster, ", ".join(map(repr, FORECASTERS)))
        sigma = self.hermite_sigma
        if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real)
                or not 0 < float(sigma) <= 1):
            _fail("hermite_sigma", sigma, "a float in (0, 1] (HiCache's contraction factor; "
                  f"default {HERMITE_SIGMA})")
        sigma = float(sigma)
        if self.forecaster != "hermite" and sigma != HERMITE_SIGMA:
            _fail("hermite_sigma", sigma, f"{HERMITE_SIGMA} (the default) unless "
                  "forecaster='hermite' (it is only used there)")
        object.__setattr__(self, "hermite_sigma", sigma)

    def _check_adaptive(self) -> None:
        adaptive = AdaptiveOptions.coerce(self.adaptive)
        object.__setattr__(self, "adaptive", adaptive)
        if adaptive is None:
            return
        if self.schedule is not None:
            _fail("adaptive", adaptive, "None when a schedule is given (an explicit schedule "
                  "fixes the computed steps; drop one of the two)")
        if self.order == 0:
            _fail("adaptive", adaptive, "None with order=0 (the error estimate is the highest "
                  "Taylor row's term, and order 0 has no row beyond D_0); use order >= 1")

    def _check_schedule(self) -> None:
        steps = self.schedule
        allowed = "a sequence of computed step indices (ints >= 0), e.g. [0, 5, 10]"
        if isinstance(steps, torch.Tensor):
            steps = steps.tolist() if steps.dim() == 1 and not steps.is_floating_point() else None
        if (not isinstance(steps, Collection) or isinstance(steps, (str, bytes, Mapping))
                or not all(_is_int(s) and s >= 0 for s in steps)):
            _fail("schedule", self.schedule, allowed)
        steps = [int(s) for s in steps]
        if 0 not in steps:
            _fail("schedule", sorted(steps), "a collection that contains step 0 (the first "
                  "step has nothing to forecast from)")
        if self.num_steps is not None and max(steps) >= self.num_steps:
            _fail("schedule", sorted(steps), f"indices below num_steps={self.num_steps}")
        object.__setattr__(self, "schedule", frozenset(steps))

    def _check_cut(self) -> None:
        cut = self.cut
        if isinstance(cut, str):
            if cut not in CUTS:
                _fail("cut", cut, f"{' or '.join(map(repr, CUTS))}, or a list of regular "
                      "expressions over module paths (e.g. [r'blocks\\.\\d+\\.attn'])")
            return
        if not isinstance(cut, Collection) or not cut:
            _fail("cut", cut, "'block' or a non-empty list of regular expressions")
        for pattern in cut:
            if not isinstance(pattern, str):
                _fail("cut", cut, "'block' or a list of regular expressions (strings)")
            try:
                re.compile(pattern)
            except re.error as err:
                _fail("cut", pattern, f"a valid regular expression ({err})")
        object.__setattr__(self, "cut", tuple(cut))

    @property
    def torch_state_dtype(self) -> torch.dtype:
        return STATE_DTYPES[self.state_dtype]

    def inductor_patches(self) -> dict[str, Any]:
        """Inductor config for this compile: the mode's settings, then explicit keys."""
        patches: dict[str, Any] = {}
        if self.mode not in (None, "default"):
            patches.update(torch._inductor.list_mode_options(self.mode))
        patches.update(self.inductor_config)
        return patches

    @classmethod
    def from_compile_kwargs(cls, mode: str | None = None,
                            options: Mapping[str, Any] | None = None) -> TaylorSeerOptions:
        """Build from what ``torch.compile(mode=..., options=...)`` passes to a backend."""
        if options is not None and not isinstance(options, Mapping):
            raise OptionError(f"ts_compile: options must be a dict, got {type(options).__name__}.")
        ours = {f.name for f in dataclasses.fields(cls)} - {"inductor_config"}
        settings: dict[str, Any] = {}
        inductor: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if key in ours:
                settings[key] = value
            elif key == "inductor_config":
                if not isinstance(value, Mapping):
                    _fail("inductor_config", value, "a dict of Inductor config keys and values")
                for inner, inner_value in value.items():
                    inductor[inner] = _check_inductor_option(inner, inner_value, ours)
            else:
                inductor[key] = _check_inductor_option(key, value, ours)
        if settings.get("adaptive") is not None and "interval" in settings:
            raise OptionError(
                f"ts_compile: option 'interval'={settings['interval']!r} is unused with "
                "adaptive (the steps are chosen by the error estimate); drop it, and bound the "
                "gaps with adaptive's min_interval / max_interval.")
        if settings.get("preset") is not None:  # None: no preset (as an artefact records it)
            preset = settings["preset"]
            if preset not in PRESETS:
                _fail("preset", preset, ", ".join(map(repr, PRESETS)))
            settings = {**PRESETS[preset], **settings}
        if mode is not None:
            if "mode" in settings and settings["mode"] != mode:
                raise OptionError(f"ts_compile: mode={mode!r} conflicts with options['mode']="
                                  f"{settings['mode']!r}; give it once.")
            settings["mode"] = mode
        return cls(inductor_config=inductor, **settings)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> TaylorSeerOptions:
        """The official code's settings for a model (PRESETS), with `overrides` on top."""
        return cls.from_compile_kwargs(options={"preset": preset, **overrides})

    @classmethod
    def coerce(cls, value: TaylorSeerOptions | Mapping[str, Any] | None) -> TaylorSeerOptions:
        if isinstance(value, cls):
            return value
        return cls.from_compile_kwargs(options=value)


def _check_inductor_option(key: Any, value: Any, ours: set[str]) -> Any:
    """An Inductor config key and its value, checked against Inductor's config whichever
    compiler runs (so that `compiler="eager"` in tests does not hide a typo)."""
    import torch._inductor.config as inductor_config

    entry = inductor_config._config.get(key) if isinstance(key, str) else None
    if entry is None:
        raise OptionError(
            f"ts_compile: unknown option {key!r}; TaylorSeer options are "
            f"{', '.join(sorted(ours))}, and Inductor config keys pass through "
            "(see torch._inductor.config).")
    if isinstance(entry.default, bool) and not isinstance(value, bool):
        _fail(key, value, "True or False (an Inductor switch)")
    return value
