"""A transcription of the official TaylorSeer code's cache logic, for checking the presets.

Shenyi-Z/TaylorSeer @288776d: `TaylorSeer-FLUX/src/flux/taylor_utils/__init__.py` and
`.../cache_functions/{cal_type,cache_init,force_scheduler}.py` (mode "Taylor"); the same files
under `TaylorSeer-HunyuanVideo/hyvideo/modules/` and `TaylorSeer-DiT/`. The functions below keep
the official names, dictionaries and conditions line for line (only the per-stream/layer/module
nesting is flattened to one key per cached tensor), so that a difference between ts_compile's
presets and the official behaviour shows up here, independently of ts_compile's own math.

Differences between the three codes that matter:
- FLUX and HunyuanVideo count steps up from 0; DiT counts down from num_steps - 1.
- The guard on building differences: FLUX/HunyuanVideo `step > first_enhance - 2` (with FLUX's
  first_enhance 3 no differences on steps 0 and 1); DiT `step < num_steps - first_enhance + 1`.
- The schedule (`cal_type`): the first `first_enhance` steps are full, then one full step every
  `fresh_threshold` (FLUX/Hunyuan) or `interval` (DiT) steps, counted by `cache_counter`.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

OFFICIAL_DEFAULTS = {  # (interval, max_order, first_enhance) of the official "Taylor" settings
    "flux": (6, 1, 3),       # TaylorSeer-FLUX cache_init, mode 'Taylor'
    "hunyuan": (5, 1, 1),    # TaylorSeer-HunyuanVideo cache_init, mode 'Taylor'
    "dit": (4, 4, 2),        # TaylorSeer-DiT sample.py CLI defaults and cache_init
}


# --- FLUX / HunyuanVideo --------------------------------------------------------------------
def cache_init_flux(interval: int, max_order: int, first_enhance: int):
    cache_dic = {"cache": {-1: {}}, "cache_counter": 0, "taylor_cache": True,
                 "fresh_ratio": 0.0, "fresh_threshold": interval, "max_order": max_order,
                 "first_enhance": first_enhance}
    current = {"activated_steps": [0]}
    return cache_dic, current


def force_scheduler(cache_dic, current):
    linear_step_weight = 0.0
    step_factor = 1 - linear_step_weight + 2 * linear_step_weight * current["step"] / current["num_steps"]
    cache_dic["cal_threshold"] = round(cache_dic["fresh_threshold"] / step_factor)


def cal_type_flux(cache_dic, current):
    first_step = current["step"] < cache_dic["first_enhance"]
    if not first_step:
        fresh_interval = cache_dic["cal_threshold"]
    else:
        fresh_interval = cache_dic["fresh_threshold"]
    if first_step or cache_dic["cache_counter"] == fresh_interval - 1:
        current["type"] = "full"
        cache_dic["cache_counter"] = 0
        current["activated_steps"].append(current["step"])
        force_scheduler(cache_dic, current)
    else:
        cache_dic["cache_counter"] += 1
        current["type"] = "taylor_cache"


def taylor_cache_init_flux(cache_dic, current):
    if current["step"] == 0 and cache_dic["taylor_cache"]:
        cache_dic["cache"][-1][current["module"]] = {}


def derivative_approximation_flux(cache_dic, current, feature):
    difference_distance = current["activated_steps"][-1] - current["activated_steps"][-2]
    updated_taylor_factors = {0: feature}
    for i in range(cache_dic["max_order"]):
        if (cache_dic["cache"][-1][current["module"]].get(i, None) is not None) and (
                current["step"] > cache_dic["first_enhance"] - 2):
            updated_taylor_factors[i + 1] = (
                updated_taylor_factors[i] - cache_dic["cache"][-1][current["module"]][i]
            ) / difference_distance
        else:
            break
    cache_dic["cache"][-1][current["module"]] = updated_taylor_factors


# --- DiT (steps counted downwards) -----------------------------------------------------------
def cache_init_dit(interval: int, max_order: int, first_enhance: int, num_steps: int):
    cache_dic = {"cache": {-1: {}}, "interval": interval, "max_order": max_order,
                 "first_enhance": first_enhance, "cache_counter": 0}
    current = {"num_steps": num_steps, "activated_steps": [num_steps - 1]}
    return cache_dic, current


def cal_type_dit(cache_dic, current):
    first_steps = current["step"] > (current["num_steps"] - cache_dic["first_enhance"] - 1)
    fresh_interval = cache_dic["interval"]
    if first_steps or cache_dic["cache_counter"] == fresh_interval - 1:
        current["type"] = "full"
        cache_dic["cache_counter"] = 0
        current["activated_steps"].append(current["step"])
    else:
        cache_dic["cache_counter"] += 1
        current["type"] = "Taylor"


def taylor_cache_init_dit(cache_dic, current):
    if current["step"] == (current["num_steps"] - 1):
        cache_dic["cache"][-1][current["module"]] = {}


def derivative_approximation_dit(cache_dic, current, feature):
    difference_distance = current["activated_steps"][-1] - current["activated_steps"][-2]
    updated_taylor_factors = {0: feature}
    for i in range(cache_dic["max_order"]):
        if (cache_dic["cache"][-1][current["module"]].get(i, None) is not None) and (
                current["step"] < (current["num_steps"] - cache_dic["first_enhance"] + 1)):
            updated_taylor_factors[i + 1] = (
                updated_taylor_factors[i] - cache_dic["cache"][-1][current["module"]][i]
            ) / difference_distance
        else:
            break
    cache_dic["cache"][-1][current["module"]] = updated_taylor_factors


# --- shared ------------------------------------------------------------------------------------
def taylor_formula(cache_dic, current):
    x = current["step"] - current["activated_steps"][-1]
    output = 0
    for i in range(len(cache_dic["cache"][-1][current["module"]])):
        output += (1 / math.factorial(i)) * cache_dic["cache"][-1][current["module"]][i] * (x ** i)
    return output


class OfficialTaylorSeer:
    """Runs `model` one denoising step per call, forecasting the outputs of `module_paths` the way
    the official code of `variant` ("flux", "hunyuan", "dit") does. Cached features are kept in
    float32 (the official code keeps the model's dtype; tests use float32 models)."""

    def __init__(self, model: nn.Module, module_paths: List[str], variant: str, num_steps: int,
                 interval: int | None = None, max_order: int | None = None,
                 first_enhance: int | None = None) -> None:
        defaults = OFFICIAL_DEFAULTS[variant]
        self.settings = (interval or defaults[0],
                         defaults[1] if max_order is None else max_order,
                         first_enhance or defaults[2])
        self.model, self.variant, self.num_steps = model, variant, num_steps
        self.modules = {p: model.get_submodule(p) for p in module_paths}
        self.reset()

    def reset(self) -> None:
        interval, max_order, first_enhance = self.settings
        if self.variant == "dit":
            self.cache_dic, self.current = cache_init_dit(interval, max_order, first_enhance,
                                                          self.num_steps)
            self.current["step"] = self.num_steps - 1
        else:
            self.cache_dic, self.current = cache_init_flux(interval, max_order, first_enhance)
            self.current["step"] = 0
            self.current["num_steps"] = self.num_steps
        self.kinds: Dict[str, type] = {}

    def __call__(self, *args, **kwargs):
        (cal_type_dit if self.variant == "dit" else cal_type_flux)(self.cache_dic, self.current)
        with torch.no_grad():
            if self.current["type"] == "full":
                out = self._full(args, kwargs)
            else:
                out = self._forecast(args, kwargs)
        self.current["step"] += -1 if self.variant == "dit" else 1
        return out

    def _keys(self, path: str, count: int) -> List[str]:
        return [f"{path}[{k}]" for k in range(count)]

    def _full(self, args, kwargs):
        captured = {}
        hooks = [m.register_forward_hook(
            lambda mod, i, o, path=path: captured.__setitem__(path, o))
            for path, m in self.modules.items()]
        try:
            out = self.model(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        init = taylor_cache_init_dit if self.variant == "dit" else taylor_cache_init_flux
        derive = derivative_approximation_dit if self.variant == "dit" else derivative_approximation_flux
        for path, value in captured.items():
            values = [value] if isinstance(value, torch.Tensor) else list(value)
            self.kinds[path] = type(value)
            for key, feature in zip(self._keys(path, len(values)), values):
                self.current["module"] = key
                init(self.cache_dic, self.current)
                derive(self.cache_dic, self.current, feature.detach().float().clone())
        return out

    def _forecast(self, args, kwargs):
        saved = {}
        try:
            for path, module in self.modules.items():
                keys = [k for k in self.cache_dic["cache"][-1] if k.startswith(f"{path}[")]
                values = []
                for key in keys:
                    self.current["module"] = key
                    values.append(taylor_formula(self.cache_dic, self.current))
                value = values[0] if self.kinds[path] is torch.Tensor else self.kinds[path](values)
                saved[path] = module.forward
                module.forward = lambda *a, _value=value, **k: _value
            return self.model(*args, **kwargs)
        finally:
            for path, module in self.modules.items():
                if path in saved:
                    del module.forward
