"""The loaded artefact as a model: `ExportedTaylorSeer`, one call = one denoising step.

Program-agnostic: it gets two callables `compute(*flat)` and `forecast(*flat)` (AOTInductor
packages or ONNX Runtime sessions, wrapped by deploy.py / onnx_programs.py) that take the flat
program inputs of `artefact.program_inputs` and return the model's flat outputs. Dispatch is the
backend's own `Controller` + `GraphRuntime`.

Inputs are fitted to what the programs were compiled for before any program runs: a tensor whose
shape, dtype or device differs fails with `ArtefactError` (the Dynamo path would compute something
else, or fail); one with other strides (a stride-0 `t.expand(batch)`, a transposed or sliced view)
is copied into the compiled row-major layout, as a contiguous tensor is what the programs read;
an input that already has the layout is passed as it is (no copy; a storage offset is fine).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export._tree_utils import reorder_kwargs

from .artefact import DTYPES, ArtefactError, InputSpec, program_inputs
from .calling import StateLayout
from .options import TaylorSeerOptions
from .runtime import Controller, GraphRuntime
from .state import TableShapes


def _frozen_config(config: Mapping[str, Any] | None):
    if config is None:
        return None
    try:
        from diffusers.configuration_utils import FrozenDict
    except ImportError:  # attribute access is all pipelines need
        return types.MappingProxyType(dict(config))
    return FrozenDict(config)


def _input_index(manifest: Mapping[str, Any], field: str, num_tensors: int) -> int | None:
    """manifest inputs.`field`: a tensor input's position, or None (absent in older artefacts)."""
    value = manifest["inputs"].get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 <= value < num_tensors):
        raise ArtefactError(f"ts_compile.load: manifest field inputs.{field}={value!r} is not the "
                            f"position of one of the {num_tensors} tensor inputs")
    return value


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return (f"a {value.device} tensor of shape {list(value.shape)}, dtype {value.dtype}, "
                f"strides {list(value.stride())}")
    return f"{type(value).__name__} {value!r}"


def fit_input(value: Any, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """`value` in the layout the programs were compiled for, or ArtefactError (nothing ran)."""
    if not isinstance(value, torch.Tensor):
        fix = (f"pass torch.tensor({value!r}).reshape({list(spec.shape)})"
               if isinstance(value, (int, float, bool)) else "pass a tensor")
        raise ArtefactError(f"ts_compile: input {spec.name} must be a tensor of shape "
                            f"{list(spec.shape)} and dtype {spec.dtype} (as exported), got "
                            f"{describe(value)}; {fix}")
    if value.shape != spec.shape:
        raise ArtefactError(
            f"ts_compile: input {spec.name} must have shape {list(spec.shape)} (the artefact's "
            f"shapes are static), got {describe(value)}. Reshape or expand it to "
            f"{list(spec.shape)}, or export an artefact for this shape.")
    if value.dtype != spec.dtype:
        raise ArtefactError(f"ts_compile: input {spec.name} must have dtype {spec.dtype} (as "
                            f"exported), got {describe(value)}; convert it with "
                            f".to({spec.dtype})")
    if value.device != device:
        raise ArtefactError(f"ts_compile: input {spec.name} must be on {device} (the "
                            f"artefact's device), got {describe(value)}; move it with "
                            f".to('{device}')")
    if value.stride() == spec.stride:
        return value
    # Same values, other layout (expanded, transposed, sliced): the compiled row-major copy.
    return torch.empty_strided(spec.shape, spec.stride, dtype=spec.dtype,
                               device=device).copy_(value)


class ExportedTaylorSeer(torch.nn.Module):
    """The loaded artefact: one call = one denoising step, like the compiled model.

    Dispatch (compute or forecast, when the state resets) is the backend's `GraphRuntime` under a
    `Controller`, with the two programs as its compiled graphs; no Dynamo runs.
    It stands in for a diffusers transformer: `config` (from the manifest), `dtype`, `device`,
    `cache_context(name, step_index=..., num_inference_steps=...)` and `_reset_stateful_cache()`.
    """

    def __init__(self, manifest: dict[str, Any], options: TaylorSeerOptions,
                 compute: Callable, forecast: Callable, device: torch.device) -> None:
        super().__init__()
        self.manifest = manifest
        self.options = options
        self.config = _frozen_config(manifest["model"].get("config"))
        self._device = device
        self._dtype = DTYPES[manifest["model"]["dtype"]]
        self._in_spec = pytree.treespec_loads(manifest["inputs"]["in_spec"])
        self._out_spec = pytree.treespec_loads(manifest["outputs"]["out_spec"])
        self._leaves = manifest["inputs"]["leaves"]
        tensor_positions = [i for i, leaf in enumerate(self._leaves) if leaf["kind"] == "tensor"]
        self._user_inputs = list(zip(tensor_positions, program_inputs(manifest)))
        self._constants = [(i, leaf["value"]) for i, leaf in enumerate(self._leaves)
                           if leaf["kind"] == "constant"]
        specs = list(StateLayout.from_manifest(manifest["state"]).tables)
        self._controller = Controller(options)
        index = {field: _input_index(manifest, field, len(self._user_inputs))
                 for field in ("time_tensor_index", "latent_tensor_index", "clock_tensor_index")}
        self._runtime = GraphRuntime(
            self._controller, compute, forecast, device,
            tables=specs, shapes=TableShapes([spec.shape for spec in specs]),  # static shapes
            region_names=list(manifest["regions"]),
            skipped=[tuple(s) for s in manifest["skipped_regions"]],
            time_index=index["time_tensor_index"],
            # Placement as on the Dynamo path (stepping.py): a second call with the very latent
            # tensor is another branch of the step, a time going back up a new generation.
            latent_index=index["latent_tensor_index"], clock_index=index["clock_tensor_index"],
            clock_device=device)

    # -- what a diffusers pipeline reads -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs: Any):
        """diffusers' protocol: the calls inside belong to context `name` (own Taylor state)."""
        self._controller.set_context(types.SimpleNamespace(name=name, **kwargs))
        try:
            yield
        finally:
            self._controller.set_context(None)

    def _reset_stateful_cache(self, recurse: bool = True) -> None:
        self.reset()

    # -- the compiled model's API -------------------------------------------------------------
    def reset(self) -> None:
        """Start a new generation: the next call is step 0 and forecasts nothing from before."""
        self._controller.reset()

    def stats(self) -> dict[str, Any]:
        """Same keys as `ts_compile.stats(compiled)`."""
        return self._controller.stats()

    @property
    def controller(self) -> Controller:
        return self._controller

    def example_inputs(self) -> tuple[tuple, dict[str, Any]]:
        """`(args, kwargs)` that fit the artefact: zero tensors and the exported constants."""
        leaves = [torch.zeros(leaf["shape"], dtype=DTYPES[leaf["dtype"]], device=self._device)
                  if leaf["kind"] == "tensor" else leaf["value"] for leaf in self._leaves]
        args, kwargs = pytree.tree_unflatten(leaves, self._in_spec)
        return tuple(args), dict(kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            kwargs = reorder_kwargs(kwargs, self._in_spec)
        except ValueError as err:
            raise ArtefactError(f"ts_compile: this call does not match the exported one: {err}") \
                from err
        flat, spec = pytree.tree_flatten((args, kwargs))
        if spec != self._in_spec:
            raise ArtefactError("ts_compile: this call's (args, kwargs) structure differs from the "
                                f"exported one:\n  exported: {self._in_spec}\n  called:   {spec}")
        for i, value in self._constants:
            if flat[i] != value or type(flat[i]) is not type(value):
                raise ArtefactError(f"ts_compile: input {self._leaves[i].get('path', i)} was "
                                    f"exported as the constant {value!r}, got {describe(flat[i])}")
        tensors = [fit_input(flat[i], spec, self._device) for i, spec in self._user_inputs]
        outputs = self._runtime(*tensors)
        return pytree.tree_unflatten(list(outputs), self._out_spec)

    def extra_repr(self) -> str:
        return (f"regions={len(self.manifest['regions'])}, device={self._device}, "
                f"program_format={self.manifest.get('program_format')}, options={self.options}")
