"""Deployment artefacts: both specialised graphs as compiled programs, no Dynamo at serve time.

    from ts_compile.deploy import export, load
    path = export(model, (), kwargs, options={"interval": 3}, path="flux.tsaot")   # AOTInductor
    path = export(model, (), kwargs, options=..., path="flux.tsonnx", format="onnx")
    runner = load(path)                             # an nn.Module; one call = one step
    out = runner(**kwargs); runner.reset(); runner.stats()
    pipe.transformer = runner                       # speaks diffusers' cache protocol

`export` traces the model with `torch.export.export(..., strict=False)`, runs the same passes as the
Dynamo backend (`passes.build_graphs`) on `ep.module()`, and gets the compute and forecast graphs
with the Taylor state as explicit inputs (user inputs, then one tensor per table row, then the
per-step scalars). Each graph is then compiled as a program:

- format="aoti": exported again through a thin wrapper and compiled with
  `torch._inductor.aoti_compile_and_package`; AOTInductor writes the compute program's table
  updates back into the caller's tensors, so the runner's tables are the state both share.
- format="onnx" (`onnx_programs.py`): an ONNX model per program, the state as explicit inputs and
  outputs, run with ONNX Runtime.

The artefact is a directory (`artefact.py` says what is checked at load, and why):

    <path>/manifest.json                JSON only: options, schedule rule, state layout, input and
                                        output specs, versions, device, SHA-256 of each package
    <path>/compute.pt2 | compute.onnx   the compute program (carries the manifest's core)
    <path>/forecast.pt2 | forecast.onnx the forecast program (idem)

`load` returns an `ExportedTaylorSeer` (runner.py) whose dispatch is the backend's own
`GraphRuntime` and `Controller`, with the two programs in place of the Inductor-compiled graphs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export._tree_utils import reorder_kwargs

from .artefact import (FORMAT, FORMAT_VERSION, MANIFEST, PROGRAMS, ArtefactError, InputSpec,
                       check_manifest, check_records, contiguous_strides, core, device_name,
                       dtype_name, embed_aoti_record, options_to_json, program_inputs,
                       read_aoti_record, read_manifest, sha256, verified_package, zeros_for)
from .calling import (StateLayout, clock_position, first_positions, positional_parameter_names,
                      time_position)
from .options import OptionError, TaylorSeerOptions
from .passes import NotApplicable, TaylorSeerGraphs, build_graphs, declared_block_lists
from .runner import ExportedTaylorSeer
from .state import TaylorState

__all__ = ["ArtefactError", "ExportedTaylorSeer", "FORMAT_VERSION", "FORMATS", "export", "load",
           "read_manifest"]

FORMATS = {"aoti": ".pt2", "onnx": ".onnx"}  # program format -> package file suffix
_AOTI_CONFIGS = {"always_keep_tensor_constants": True}  # see reference/export.md: tiny constants


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
_DROPPABLE = {torch.ops.aten._assert_tensor_metadata.default, torch.ops.aten.dropout.default,
              torch.ops.aten.scaled_dot_product_attention.default}


def _is_impure(node: fx.Node) -> bool:
    """FX's purity, except for ops exported graphs carry that need not survive when unused
    (metadata asserts, eval-mode dropout, attention): they keep dead embedders alive otherwise."""
    if node.op == "call_function" and node.target in _DROPPABLE:
        return False
    return node.is_impure()


def _op_count(gm: fx.GraphModule) -> int:
    return sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module"))


def _prune(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code(is_impure_node=_is_impure)
    gm.graph.lint()
    gm.recompile()
    return gm


class _Program(torch.nn.Module):
    """What is exported per program: the specialised graph, called with flat tensors only.

    Non-tensor leaves of the user's inputs (None, return_dict=False, ...) are constants of the
    export; they are put back at their positions here, so the program's inputs are the user's
    tensors, then the tables, then the scalars.
    """

    def __init__(self, gm: fx.GraphModule, leaves: list[dict[str, Any]]) -> None:
        super().__init__()
        self.gm = gm
        self._leaves = leaves

    def forward(self, *flat: torch.Tensor):
        tensors = iter(flat)
        user = [next(tensors) if leaf["kind"] == "tensor" else leaf["value"]
                for leaf in self._leaves]
        return self.gm(*user, *tensors)


def _describe_leaves(flat_with_paths: Sequence[tuple[Any, Any]]) -> list[dict[str, Any]]:
    leaves = []
    for position, (key_path, value) in enumerate(flat_with_paths):
        path = _leaf_name(key_path)
        if isinstance(value, torch.Tensor):
            leaves.append({"kind": "tensor", "path": path, "shape": list(value.shape),
                           "stride": contiguous_strides(list(value.shape)),
                           "dtype": dtype_name(value.dtype), "device": device_name(value.device)})
        elif value is None or isinstance(value, (bool, int, float, str)):
            leaves.append({"kind": "constant", "path": path, "value": value})
        else:
            raise ArtefactError(f"ts_compile.export: input {path} (leaf {position}) has type "
                                f"{type(value).__name__}; only tensors and None/bool/int/float/str "
                                "constants can be part of an exported call")
    return leaves


def _leaf_name(key_path) -> str:
    """`(args, kwargs)` key path as the user wrote it: `timestep`, `args[0]`, `kwargs['a'][1]`."""
    text = pytree.keystr(key_path)
    match = re.fullmatch(r"\[1\]\['([A-Za-z_]\w*)'\](.*)", text)  # a keyword argument
    if match:
        return match.group(1) + match.group(2)
    match = re.fullmatch(r"\[0\]\[(\d+)\](.*)", text)  # a positional argument
    return f"args[{match.group(1)}]{match.group(2)}" if match else text


def _tensor_positions(model: torch.nn.Module, args: tuple, kwargs: Mapping[str, Any],
                      flat: Sequence[Any]) -> dict[str, int]:
    """Forward argument name -> position among the tensor inputs (the programs' input order),
    for the arguments the call passes as tensors."""
    try:
        bound = dict(inspect.signature(model.forward).bind_partial(*args, **kwargs).arguments)
    except TypeError:
        bound = {}
    bound = {**kwargs, **bound}
    position: dict[int, int] = {}
    for i, value in enumerate(v for v in flat if isinstance(v, torch.Tensor)):
        position.setdefault(id(value), i)  # a tensor passed twice: its first position
    return first_positions([(name, position[id(value)]) for name, value in bound.items()
                            if isinstance(value, torch.Tensor) and id(value) in position])


def _time_tensor_index(positions: Mapping[str, int], settings: TaylorSeerOptions) -> int | None:
    """Position among the tensor inputs of the argument carrying the sampler time (options.time)."""
    try:
        return time_position(positions, settings, where="ts_compile.export")
    except OptionError as err:
        raise ArtefactError(str(err)) from None


def _placement_indices(model: torch.nn.Module, positions: Mapping[str, int],
                       settings: TaylorSeerOptions) -> dict[str, int | None]:
    """The inputs the runner places calls by, as the Dynamo path does (stepping.py): the latent
    (the forward's first argument: a second call with the very same tensor is another branch of
    the step) and the clock (a time input going back up starts a new generation)."""
    first = next(iter(positional_parameter_names(model.forward)), None)
    return {"latent_tensor_index": positions.get(first),
            "clock_tensor_index": clock_position(positions, settings)}


def _model_config(model: torch.nn.Module) -> dict[str, Any] | None:
    """A diffusers model's config (JSON-serialisable entries), so the runner can stand in for it."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        return None
    kept = {}
    for key, value in config.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept


def _model_dtype(model: torch.nn.Module, leaves: list[dict[str, Any]]) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return dtype_name(p.dtype)
    return next((leaf["dtype"] for leaf in leaves if leaf["kind"] == "tensor"), "float32")


def _aoti_configs(settings: TaylorSeerOptions) -> dict[str, Any]:
    """The options' Inductor patches (minus CUDA-graph keys, which AOTInductor does not use)."""
    patches = {k: v for k, v in settings.inductor_patches().items()
               if not k.startswith("triton.cudagraph")}
    return {**patches, **_AOTI_CONFIGS}


def _compile_aoti(program: fx.GraphModule, leaves: list[dict[str, Any]], example: tuple,
                  file: Path, settings: TaylorSeerOptions) -> None:
    with torch.no_grad():
        program_ep = torch.export.export(_Program(program, leaves), example, strict=False)
        torch._inductor.aoti_compile_and_package(
            program_ep, package_path=str(file), inductor_configs=_aoti_configs(settings))


def _check_target(target: Path, overwrite: bool) -> None:
    if not target.exists():
        return
    if not overwrite:
        raise FileExistsError(f"ts_compile.export: {target} exists (pass overwrite=True)")
    is_artefact = target.is_dir() and ((target / MANIFEST).is_file() or not any(target.iterdir()))
    if not is_artefact:  # never delete what export did not write
        raise FileExistsError(f"ts_compile.export: {target} exists and is not a ts_compile "
                              "artefact; choose another path")


def export(model: torch.nn.Module, args: tuple = (), kwargs: Mapping[str, Any] | None = None, *,
           path: str | os.PathLike, options: TaylorSeerOptions | Mapping[str, Any] | None = None,
           overwrite: bool = True, format: str = "aoti") -> Path:
    """Write the TaylorSeer deployment artefact of `model(*args, **kwargs)` to the directory `path`.

    `format`: "aoti" (AOTInductor packages, CPU or CUDA) or "onnx" (ONNX models run with ONNX
    Runtime, CPU; needs `pip install ts-compile[onnx]`). Shapes, dtypes and the device are those
    of the example inputs (static; another shape needs another artefact); the programs read their
    tensor inputs row-major contiguous. Non-tensor arguments (`return_dict=False`,
    `guidance=None`, ...) are constants of the artefact: calls must pass the same values. Returns
    the artefact's path. Raises `ArtefactError` when the passes find nothing to forecast (the
    Dynamo backend would fall back to a plain compile; an artefact without TaylorSeer is not what
    was asked for).
    """
    settings = _check_request(format, options)
    target = Path(path)
    _check_target(target, overwrite)
    timings: dict[str, Any] = {}  # seconds; op counts before/after the export DCE
    start = time.perf_counter()
    traced = _trace(model, tuple(args), dict(kwargs or {}), settings)
    timings["trace_s"] = time.perf_counter() - start
    layout = StateLayout.of(traced.graphs.guards.tables, settings)
    example, device = _example_inputs(traced.flat, layout, format)

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent.resolve()))
    try:
        files = _compile_programs(traced, example, layout, settings, format, work, timings)
        manifest = _manifest(model, traced, layout, settings, format, device, timings)
        _seal(work, files, manifest, format)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _check_request(format: str, options: TaylorSeerOptions | Mapping[str, Any] | None
                   ) -> TaylorSeerOptions:
    """The options, once the format is known and its packages are installed."""
    if format not in FORMATS:
        raise ArtefactError(f"ts_compile.export: format={format!r} is not one of "
                            f"{', '.join(map(repr, FORMATS))}")
    if format == "onnx":
        from . import onnx_programs

        onnx_programs.require_onnx()
    settings = TaylorSeerOptions.coerce(options)
    if settings.adaptive is not None:
        raise ArtefactError(
            "ts_compile.export: option adaptive is not supported in artefacts (their compute "
            "program has no norms output and the runner no adaptive decisions); export with "
            "a fixed schedule instead: pick interval (or schedule=, e.g. the steps "
            "stats(compiled)['adaptive']['last_generation'] lists) and drop adaptive.")
    options_to_json(settings)  # fails now if the options cannot be recorded
    return settings


@dataclasses.dataclass
class _Traced:
    """The call, traced once and rewritten by the passes; what the manifest records of it."""

    graphs: TaylorSeerGraphs
    flat: list[Any]  # the call's leaves, in the exported program's order
    leaves: list[dict[str, Any]]  # their manifest records
    inputs: dict[str, Any]  # manifest field `inputs`
    out_spec: str


def _trace(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any],
           settings: TaylorSeerOptions) -> _Traced:
    """Export the call and run the passes on it: every check that can fail, before the long
    compiles."""
    with torch.no_grad():
        ep = torch.export.export(model, args, kwargs, strict=False)
    try:
        gm = ep.module(check_guards=False)
    except TypeError:  # older torch: no check_guards
        gm = ep.module()
    in_spec, out_spec = gm._in_spec, gm._out_spec
    flat_with_paths, spec = pytree.tree_flatten_with_path((args, reorder_kwargs(kwargs, in_spec)))
    if spec != in_spec:
        raise ArtefactError(f"ts_compile.export: unexpected input structure {spec} (exported "
                            f"program: {in_spec})")
    flat = [value for _, value in flat_with_paths]
    leaves = _describe_leaves(flat_with_paths)
    positions = _tensor_positions(model, args, kwargs, flat)
    indices = {"time_tensor_index": _time_tensor_index(positions, settings),
               **_placement_indices(model, positions, settings)}
    try:
        graphs = build_graphs(gm, settings, declared_block_lists(model))
    except NotApplicable as err:
        raise ArtefactError(f"ts_compile.export: TaylorSeer does not apply to this model: {err}") \
            from err
    num_user_inputs = graphs.guards.num_user_inputs
    if num_user_inputs != len(leaves):
        raise ArtefactError(f"ts_compile.export: the exported graph has {num_user_inputs} "
                            f"inputs but the call flattens to {len(leaves)} leaves")
    specs = _spec_records(in_spec, out_spec)
    inputs = {"in_spec": specs["in_spec"], "num_user_inputs": num_user_inputs, "leaves": leaves,
              **indices}
    return _Traced(graphs, flat, leaves, inputs, specs["out_spec"])


def _spec_records(in_spec, out_spec) -> dict[str, str]:
    try:
        return {"in_spec": pytree.treespec_dumps(in_spec),
                "out_spec": pytree.treespec_dumps(out_spec)}
    except Exception as err:  # noqa: BLE001 - any unserialisable container type
        raise ArtefactError("ts_compile.export: the inputs or outputs use a container type that "
                            "cannot be recorded as JSON (for diffusers models pass "
                            f"return_dict=False): {err}") from err


def _example_inputs(flat: list[Any], layout: StateLayout, format: str
                    ) -> tuple[tuple, torch.device]:
    """The programs' example inputs (calling.py) and their device."""
    # Every program input row-major contiguous, whatever the example's layout (a stride-0
    # `t.expand(batch)` would otherwise be compiled in, and no other value could be passed).
    tensors = [v.contiguous() for v in flat if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    if format == "onnx" and device.type != "cpu":
        raise ArtefactError("ts_compile.export: format='onnx' is exported and run on the CPU "
                            f"here; the example inputs are on {device}. Use format='aoti'.")
    state = TaylorState(layout, layout.static_shapes(), device)
    return layout.graph_inputs(tensors, state), device


def _compile_programs(traced: _Traced, example: tuple, layout: StateLayout,
                      settings: TaylorSeerOptions, format: str, work: Path,
                      timings: dict[str, Any]) -> dict[str, Path]:
    """Each graph pruned and compiled into `work` as a program of `format`."""
    files = {}
    for name, program in zip(PROGRAMS, (traced.graphs.compute, traced.graphs.forecast)):
        t0 = time.perf_counter()
        ops_before = _op_count(program)
        _prune(program)
        timings[f"{name}_ops"] = [ops_before, _op_count(program)]
        files[name] = work / f"{name}{FORMATS[format]}"
        if format == "aoti":
            _compile_aoti(program, traced.leaves, example, files[name], settings)
        else:
            from . import onnx_programs

            onnx_programs.export_program(_Program(program, traced.leaves), example, files[name],
                                         num_state=layout.num_state_inputs, role=name)
        timings[f"{name}_compile_s"] = time.perf_counter() - t0
    return files


def _manifest(model: torch.nn.Module, traced: _Traced, layout: StateLayout,
              settings: TaylorSeerOptions, format: str, device: torch.device,
              timings: dict[str, Any]) -> dict[str, Any]:
    """The manifest, all but its package list (`_seal`)."""
    guards = traced.graphs.guards
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "program_format": format,
        "torch_version": torch.__version__,
        "ts_compile_version": _ts_version(),
        "device": device_name(device),
        "options": options_to_json(settings),
        "schedule": _schedule_rule(settings),
        "state": layout.to_manifest(),
        "inputs": traced.inputs,
        "outputs": {"out_spec": traced.out_spec},
        "program_inputs": "user tensors (leaves of kind 'tensor', in order, row-major "
                          "contiguous), then for each of state.tables its order+1 rows "
                          "D_0..D_order (each of the table's shape, state dtype), then the "
                          "float32 scalars vector",
        "regions": list(guards.region_names),
        "outputs_per_region": list(guards.outputs_per_region),
        "skipped_regions": [list(s) for s in traced.graphs.skipped],
        "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "dtype": _model_dtype(model, traced.leaves), "config": _model_config(model)},
        "build": {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
    }


def _seal(work: Path, files: dict[str, Path], manifest: dict[str, Any], format: str) -> None:
    """Each package gets the manifest's core; the manifest gets each package's size and hash."""
    packages = {}
    for name, file in files.items():
        if format == "aoti":
            embed_aoti_record(file, name, core(manifest))
        else:
            from . import onnx_programs

            onnx_programs.embed_record(file, name, core(manifest))
        packages[name] = {"file": file.name, "bytes": file.stat().st_size, "sha256": sha256(file)}
    manifest["packages"] = packages
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _ts_version() -> str:
    from . import __version__

    return __version__


def _schedule_rule(settings: TaylorSeerOptions) -> dict[str, Any]:
    if settings.schedule is not None:
        rule = "explicit: a step is computed iff its index is in `schedule`"
    else:
        rule = ("official: computed iff step < warmup or (step - (warmup - 1)) % interval == 0, "
                "or step >= num_steps - cooldown when num_steps is known")
    return {"rule": rule, "warmup": settings.warmup, "interval": settings.interval,
            "cooldown": settings.cooldown, "num_steps": settings.num_steps,
            "schedule": None if settings.schedule is None else sorted(settings.schedule),
            "first_step_computes": True,
            "resets": "after step num_steps - 1 when num_steps is known; when a given step index "
                      "is <= the previous one; on reset()"}


# ------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------
def _manifest_error(root: Path, err: Exception) -> ArtefactError:
    return ArtefactError(f"ts_compile.load: {root}/{MANIFEST} lacks a field or has an invalid "
                         f"one ({type(err).__name__}: {err})")


def load(path: str | os.PathLike, *, options: TaylorSeerOptions | Mapping[str, Any] | None = None,
         device: str | torch.device | None = None, check_torch_version: bool = True,
         allow_pickle: bool = False) -> ExportedTaylorSeer:
    """Load an artefact written by `export` and return its runner.

    `options`: the options you expect it to have been exported with; any difference fails, naming
    the fields. `device`: the device you mean to run on; it must be the one it was exported for.
    The manifest's torch version must be this torch's. Before any program is opened, each
    package's size and SHA-256 are checked and its own record must agree with the manifest field
    by field; then what the programs report (inputs, device, which writes the state) must agree
    too. A package carrying pickled data is refused unless `allow_pickle=True` (unpickling can
    run code). Loading runs native code from the artefact: load only artefacts you trust.
    """
    root = Path(path)
    manifest = read_manifest(root)
    try:
        settings = check_manifest(manifest, root, device, options, check_torch_version)
        program_format = manifest.get("program_format")
        if program_format not in FORMATS:
            raise ArtefactError(f"ts_compile.load: {root} has program_format "
                                f"{program_format!r}, not one of {', '.join(FORMATS)}")
        files = {name: verified_package(root, name, manifest["packages"][name])
                 for name in PROGRAMS}
        if program_format == "aoti":
            records = {name: read_aoti_record(file, allow_pickle) for name, file in files.items()}
        else:
            from . import onnx_programs

            onnx_programs.require_onnx()
            sessions = {name: onnx_programs.open_session(file, name)
                        for name, file in files.items()}
            records = {name: onnx_programs.read_record(sessions[name], file)
                       for name, file in files.items()}
        check_records(manifest, records, files)
        specs = program_inputs(manifest)
        made_for = torch.device(manifest["device"])
        if program_format == "aoti":
            programs = {name: _load_aoti(file, name, specs, made_for, allow_pickle)
                        for name, file in files.items()}
        else:
            programs = onnx_programs.load_programs(sessions, files, specs, manifest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise _manifest_error(root, err) from err
    try:
        return ExportedTaylorSeer(manifest, settings, programs["compute"], programs["forecast"],
                                  made_for)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _manifest_error(root, err) from err


# -- AOTInductor programs ------------------------------------------------------------------------
_NATIVE_CHECKS = "AOTI_RUNTIME_CHECK_INPUTS"
_NATIVE_CHECKS_LOCK = threading.Lock()
SENTINEL = 1024.0  # exact in every state dtype; a compute program overwrites it, a forecast not


@contextlib.contextmanager
def _native_input_checks():
    """AOTInductor's generated code checks every input's dtype, sizes, strides and device when
    this variable is set at the first call of its library (read once, kept for its lifetime)."""
    with _NATIVE_CHECKS_LOCK:
        before = os.environ.get(_NATIVE_CHECKS)
        os.environ[_NATIVE_CHECKS] = "1"
        try:
            yield
        finally:
            if before is None:
                del os.environ[_NATIVE_CHECKS]
            else:
                os.environ[_NATIVE_CHECKS] = before


def _open_aoti(file: Path, name: str, allow_pickle: bool):
    try:
        if allow_pickle:  # AOTInductor's Python loader: unpickles embedded programs' weights
            # torch 2.10's Python loader reads torch._inductor.codecache without importing it
            # (imported by name: an `import torch.x` here would make `torch` a local).
            importlib.import_module("torch._inductor.codecache")

            return torch._inductor.aoti_load_package(str(file)).loader
        # The C++ loader alone: extracts and opens the compiled library, never unpickles.
        return torch._C._aoti.AOTIModelPackageLoader(str(file), "model", False, 1, -1)
    except Exception as err:  # noqa: BLE001 - report which package, keep the cause
        raise ArtefactError(f"ts_compile.load: AOTInductor could not load the {name} package "
                            f"{file}: {err}") from err


def _load_aoti(file: Path, name: str, specs: list[InputSpec], device: torch.device,
               allow_pickle: bool) -> Callable:
    loader = _open_aoti(file, name, allow_pickle)
    taken = pytree.treespec_loads(loader.get_call_spec()[0]).num_leaves
    if taken != len(specs):
        raise ArtefactError(
            f"ts_compile.load: the manifest describes {len(specs)} program inputs (fields "
            f"inputs.leaves, state.tables, state.order), the {name} package {file.name} takes "
            f"{taken}")
    compiled_for = loader.get_metadata().get("AOTI_DEVICE_KEY")
    if compiled_for != device.type:
        raise ArtefactError(f"ts_compile.load: manifest field device is {device}, the {name} "
                            f"package {file.name} was compiled for {compiled_for}")
    _probe(loader.run, name, specs, device, file)
    run = loader.run  # flat tensors in, flat tensors out (no pytree per call)
    return lambda *flat: run(list(flat))


@contextlib.contextmanager
def _native_stderr():
    """Capture what native code writes to file descriptor 2 meanwhile (and pass it on): yields
    a function returning the text so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)

        def text() -> str:
            capture.flush()
            capture.seek(0)
            return capture.read().decode(errors="replace")
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            seen = text()
            if seen:
                sys.stderr.write(seen)


def _probe(run: Callable, name: str, specs: list[InputSpec], device: torch.device,
           file: Path) -> None:
    """First call of the program, on zeros of the manifest's layout, with AOTInductor's input
    checks switched on for good: the layout the manifest describes must be the one the program
    was compiled for, and only the compute program may write the Taylor tables."""
    inputs = zeros_for(specs, device)
    tables = [t for t, spec in zip(inputs, specs) if spec.field.startswith("state.tables")]
    for table in tables:
        table.fill_(SENTINEL)
    with _native_input_checks(), torch.no_grad(), _native_stderr() as native_output:
        try:
            run(inputs)
        except RuntimeError as err:
            # torch 2.13 puts the failed check in the exception; 2.9 and 2.11 print it on stderr only.
            found = re.search(r"input_handles\[(\d+)\]: ([^\n]*)", f"{err}\n{native_output()}")
            if found and int(found.group(1)) < len(specs):
                spec = specs[int(found.group(1))]
                raise ArtefactError(
                    f"ts_compile.load: manifest field {spec.field} ({spec.name}) does not match "
                    f"the {name} package {file.name}: {found.group(2).strip()}") from err
            raise ArtefactError(f"ts_compile.load: the {name} package {file.name} failed on "
                                f"inputs of the manifest's layout: {err}") from err
    wrote_state = any(not bool((table == SENTINEL).all()) for table in tables)
    if wrote_state != (name == "compute"):
        actual = "writes" if wrote_state else "does not write"
        raise ArtefactError(
            f"ts_compile.load: manifest field packages.{name} names {file.name}, which {actual} "
            f"the Taylor tables: it is the {'compute' if wrote_state else 'forecast'} program")


def package_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of each file of the artefact (for reports)."""
    return {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.is_file()}
