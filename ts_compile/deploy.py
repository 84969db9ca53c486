"""Deployment artefact: both specialised graphs as AOTInductor packages, no Dynamo at serve time.

    from ts_compile.deploy import export, load
    path = export(model, (), kwargs, options={"interval": 3}, path="flux.tsaot")
    runner = load(path)                             # an nn.Module; one call = one step
    out = runner(**kwargs); runner.reset(); runner.stats()
    pipe.transformer = runner                       # speaks diffusers' cache protocol

`export` traces the model with `torch.export.export(..., strict=False)`, runs the same passes as the
Dynamo backend (`passes.build_graphs`) on `ep.module()`, and gets the compute and forecast graphs
with the Taylor state as explicit inputs (user inputs, then one table per live output, then the
per-step scalars). Each graph is exported again through a thin wrapper module and compiled with
`torch._inductor.aoti_compile_and_package`; AOTInductor writes the compute program's table updates
back into the caller's tensors, so the runner's tables are the state both programs share.

The artefact is a directory (see `docs/deployment.md` for why not one zip):

    <path>/manifest.json    JSON only (never unpickled): options, schedule rule, state layout,
                            input/output specs, versions, device, SHA-256 of each package
    <path>/compute.pt2      AOTInductor package of the compute program
    <path>/forecast.pt2     AOTInductor package of the forecast program

`load` checks the manifest (format, torch version, device, expected options) and each package's
size and checksum before AOTInductor opens it, then returns an `ExportedTaylorSeer` whose dispatch
is the backend's own `GraphRuntime` and `Controller` (same schedule, same reset rules, same
`stats()`), with the two AOTInductor runners in place of the Inductor-compiled graphs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export._tree_utils import reorder_kwargs

from .options import TaylorSeerOptions
from .passes import NotApplicable, TableSpec, build_graphs
from .runtime import Controller, GraphRuntime
from .state import TableShapes
from .taylor import scalars_length

__all__ = ["ArtefactError", "ExportedTaylorSeer", "FORMAT_VERSION", "export", "load",
           "read_manifest"]

FORMAT = "ts-compile-taylorseer-aoti"
FORMAT_VERSION = 2  # 2: one program input per table row
MANIFEST = "manifest.json"
PROGRAMS = ("compute", "forecast")
_MAX_MANIFEST_BYTES = 16 * 2**20
_AOTI_CONFIGS = {"always_keep_tensor_constants": True}  # see reference/export.md: tiny constants

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)}


class ArtefactError(RuntimeError):
    """The artefact cannot be loaded here (mismatch, corruption) or a call does not fit it."""


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _device_name(device: torch.device) -> str:
    return device.type if device.index is None else f"{device.type}:{device.index}"


def _options_to_json(settings: TaylorSeerOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "schedule" and value is not None:
            value = sorted(value)
        elif field.name == "cut" and not isinstance(value, str):
            value = list(value)
        elif field.name == "inductor_config":
            value = dict(value)
        out[field.name] = value
    try:
        json.dumps(out)
    except TypeError as err:
        raise ArtefactError(f"ts_compile.export: options must be JSON-serialisable to be recorded "
                            f"in the manifest ({err})") from err
    return out


def _options_from_json(data: Mapping[str, Any]) -> TaylorSeerOptions:
    data = dict(data)
    inductor = data.pop("inductor_config", {}) or {}
    return TaylorSeerOptions.coerce({**data, "inductor_config": inductor})


_NOT_IN_ARTEFACT = {"compiler"}  # the Dynamo path's inner compiler; an artefact is AOTInductor


def _option_mismatches(recorded: TaylorSeerOptions, expected: TaylorSeerOptions) -> list[str]:
    return [f"{f.name}: artefact has {getattr(recorded, f.name)!r}, expected "
            f"{getattr(expected, f.name)!r}"
            for f in dataclasses.fields(recorded)
            if f.name not in _NOT_IN_ARTEFACT
            and getattr(recorded, f.name) != getattr(expected, f.name)]


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
    export; they are put back at their positions here, so the package's inputs are the user's
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


def _describe_leaves(flat: Sequence[Any]) -> list[dict[str, Any]]:
    leaves = []
    for position, value in enumerate(flat):
        if isinstance(value, torch.Tensor):
            leaves.append({"kind": "tensor", "shape": list(value.shape),
                           "dtype": _dtype_name(value.dtype), "device": _device_name(value.device)})
        elif value is None or isinstance(value, (bool, int, float, str)):
            leaves.append({"kind": "constant", "value": value})
        else:
            raise ArtefactError(f"ts_compile.export: input leaf {position} has type "
                                f"{type(value).__name__}; only tensors and None/bool/int/float/str "
                                "constants can be part of an exported call")
    return leaves


def _time_tensor_index(model: torch.nn.Module, args: tuple, kwargs: Mapping[str, Any],
                       flat: Sequence[Any], settings: TaylorSeerOptions) -> int | None:
    """Position among the tensor inputs of the argument carrying the sampler time (options.time)."""
    if settings.time == "step":
        return None
    name = settings.time_input
    try:
        bound = inspect.signature(model.forward).bind_partial(*args, **kwargs).arguments
    except TypeError:
        bound = dict(kwargs)
    value = bound.get(name, kwargs.get(name))
    if not isinstance(value, torch.Tensor):
        raise ArtefactError(
            f"ts_compile.export: option time={settings.time!r} reads the argument {name!r}, but "
            f"the call passes {'no such argument' if value is None else _describe(value)}; pass "
            "the time as a tensor, set time_input to the argument's name, or use time='step'.")
    tensors = [v for v in flat if isinstance(v, torch.Tensor)]  # the programs' input order
    return next(i for i, v in enumerate(tensors) if v is value)


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
            return _dtype_name(p.dtype)
    return next((leaf["dtype"] for leaf in leaves if leaf["kind"] == "tensor"), "float32")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _aoti_configs(settings: TaylorSeerOptions) -> dict[str, Any]:
    """The options' Inductor patches (minus CUDA-graph keys, which AOTInductor does not use)."""
    patches = {k: v for k, v in settings.inductor_patches().items()
               if not k.startswith("triton.cudagraph")}
    return {**patches, **_AOTI_CONFIGS}


def export(model: torch.nn.Module, args: tuple = (), kwargs: Mapping[str, Any] | None = None, *,
           path: str | os.PathLike, options: TaylorSeerOptions | Mapping[str, Any] | None = None,
           overwrite: bool = True) -> Path:
    """Write the TaylorSeer deployment artefact of `model(*args, **kwargs)` to the directory `path`.

    Shapes, dtypes and the device are those of the example inputs (static; another shape needs
    another artefact). Non-tensor arguments (`return_dict=False`, `guidance=None`, ...) are
    constants of the artefact: calls must pass the same values. Returns the artefact's path.
    Raises `ArtefactError` when the passes find nothing to forecast (the Dynamo backend would fall
    back to a plain compile; an artefact without TaylorSeer is not what was asked for).
    """
    settings = TaylorSeerOptions.coerce(options)
    options_record = _options_to_json(settings)
    kwargs = dict(kwargs or {})
    target = Path(path)
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"ts_compile.export: {target} exists (pass overwrite=True)")
        is_artefact = target.is_dir() and (
            (target / MANIFEST).is_file() or not any(target.iterdir()))
        if not is_artefact:  # never delete what export did not write
            raise FileExistsError(f"ts_compile.export: {target} exists and is not a ts_compile "
                                  "artefact; choose another path")

    timings: dict[str, Any] = {}  # seconds; op counts before/after the export DCE
    start = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model, tuple(args), kwargs, strict=False)
    try:
        gm = ep.module(check_guards=False)
    except TypeError:  # older torch: no check_guards
        gm = ep.module()
    in_spec, out_spec = gm._in_spec, gm._out_spec
    flat, spec = pytree.tree_flatten((tuple(args), reorder_kwargs(kwargs, in_spec)))
    if spec != in_spec:
        raise ArtefactError(f"ts_compile.export: unexpected input structure {spec} (exported "
                            f"program: {in_spec})")
    leaves = _describe_leaves(flat)
    time_index = _time_tensor_index(model, tuple(args), kwargs, flat, settings)
    try:
        graphs = build_graphs(gm, settings)
    except NotApplicable as err:
        raise ArtefactError(f"ts_compile.export: TaylorSeer does not apply to this model: {err}") \
            from err
    guards = graphs.guards
    if guards.num_user_inputs != len(leaves):
        raise ArtefactError(f"ts_compile.export: the exported graph has {guards.num_user_inputs} "
                            f"inputs but the call flattens to {len(leaves)} leaves")
    try:  # JSON records that could fail: before the long compiles
        specs = {"in_spec": pytree.treespec_dumps(in_spec),
                 "out_spec": pytree.treespec_dumps(out_spec)}
    except Exception as err:  # noqa: BLE001 - any unserialisable container type
        raise ArtefactError("ts_compile.export: the inputs or outputs use a container type that "
                            "cannot be recorded as JSON (for diffusers models pass "
                            f"return_dict=False): {err}") from err
    timings["trace_s"] = time.perf_counter() - start

    tensors = [v for v in flat if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    state_dtype = settings.torch_state_dtype
    tables = [torch.zeros(t.shape, dtype=state_dtype, device=device)
              for t in guards.tables for _ in range(settings.order + 1)]  # rows, as TaylorState
    scalars = torch.zeros(scalars_length(settings.order), dtype=torch.float32, device=device)
    example = (*tensors, *tables, scalars)

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent.resolve()))
    try:
        packages = {}
        for name, program in zip(PROGRAMS, (graphs.compute, graphs.forecast)):
            t0 = time.perf_counter()
            ops_before = _op_count(program)
            _prune(program)
            timings[f"{name}_ops"] = [ops_before, _op_count(program)]
            with torch.no_grad():
                program_ep = torch.export.export(_Program(program, leaves), example,
                                                 strict=False)
                file = work / f"{name}.pt2"
                torch._inductor.aoti_compile_and_package(
                    program_ep, package_path=str(file), inductor_configs=_aoti_configs(settings))
            timings[f"{name}_compile_s"] = time.perf_counter() - t0
            packages[name] = {"file": file.name, "bytes": file.stat().st_size,
                              "sha256": _sha256(file)}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "torch_version": torch.__version__,
            "ts_compile_version": _ts_version(),
            "device": _device_name(device),
            "options": options_record,
            "schedule": _schedule_rule(settings),
            "state": {
                "order": settings.order,
                "dtype": _dtype_name(state_dtype),
                "scalars_length": scalars_length(settings.order),
                "tables": [{"region": t.region, "output_index": t.output_index,
                            "output_name": t.output_name, "shape": [int(d) for d in t.shape],
                            "output_dtype": _dtype_name(t.dtype)} for t in guards.tables],
            },
            "inputs": {"in_spec": specs["in_spec"],
                       "num_user_inputs": guards.num_user_inputs, "leaves": leaves,
                       "time_tensor_index": time_index},
            "outputs": {"out_spec": specs["out_spec"]},
            "program_inputs": "user tensors (leaves of kind 'tensor', in order), then "
                              "for each of state.tables its order+1 rows D_0..D_order (each of the "
                              "table's shape, state dtype), then the float32 scalars vector",
            "regions": list(guards.region_names),
            "outputs_per_region": list(guards.outputs_per_region),
            "skipped_regions": [list(s) for s in graphs.skipped],
            "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                      "dtype": _model_dtype(model, leaves), "config": _model_config(model)},
            "packages": packages,
            "build": {k: round(v, 3) if isinstance(v, float) else v
                      for k, v in timings.items()},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


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
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The artefact's manifest, parsed as JSON (nothing in the artefact is ever unpickled)."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise ArtefactError(f"ts_compile.load: {path} is not a ts_compile artefact "
                            f"(no {MANIFEST})")
    if file.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ArtefactError(f"ts_compile.load: {file} is too large to be a manifest")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtefactError(f"ts_compile.load: {file} is not valid JSON (truncated or "
                            f"corrupted?): {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtefactError(f"ts_compile.load: {file} is not a ts_compile manifest")
    return manifest


def _check_manifest(manifest: dict[str, Any], path: Path, device: str | torch.device | None,
                    options: Any, check_torch_version: bool) -> TaylorSeerOptions:
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtefactError(f"ts_compile.load: {path} has format version {version!r}; this "
                            f"ts_compile reads version {FORMAT_VERSION}. Export it again.")
    built_with = manifest.get("torch_version")
    if check_torch_version and built_with != torch.__version__:
        raise ArtefactError(f"ts_compile.load: {path} was exported with torch {built_with}, this "
                            f"is torch {torch.__version__}; AOTInductor packages are not portable "
                            "across torch versions. Export it again with this torch.")
    made_for = torch.device(manifest["device"])
    wanted = None if device is None else torch.device(device)
    if wanted is not None and (wanted.type != made_for.type or None not in (
            wanted.index, made_for.index) and wanted.index != made_for.index):
        raise ArtefactError(f"ts_compile.load: {path} was exported for device {made_for}, not "
                            f"{torch.device(device)}; export it again on the target device.")
    if made_for.type == "cuda" and not torch.cuda.is_available():
        raise ArtefactError(f"ts_compile.load: {path} was exported for device {made_for}, and "
                            "CUDA is not available here.")
    if made_for.type not in ("cpu", "cuda"):
        raise ArtefactError(f"ts_compile.load: {path} targets device {made_for}, which this "
                            "runner does not support")
    try:
        recorded = _options_from_json(manifest["options"])
    except Exception as err:  # noqa: BLE001 - any invalid record is a corrupt manifest
        raise ArtefactError(f"ts_compile.load: {path} records invalid options: {err}") from err
    if options is not None:
        mismatches = _option_mismatches(recorded, TaylorSeerOptions.coerce(options))
        if mismatches:
            raise ArtefactError(f"ts_compile.load: {path} was exported with other options: "
                                + "; ".join(mismatches))
    return recorded


def _verified_package(path: Path, name: str, record: Mapping[str, Any]) -> Path:
    file = path / Path(str(record.get("file", ""))).name  # never outside the artefact
    if not file.is_file():
        raise ArtefactError(f"ts_compile.load: {name} package {file} is missing")
    size = file.stat().st_size
    if size != record.get("bytes"):
        raise ArtefactError(f"ts_compile.load: {name} package {file} has {size} bytes, the "
                            f"manifest says {record.get('bytes')} (truncated or replaced)")
    if _sha256(file) != record.get("sha256"):
        raise ArtefactError(f"ts_compile.load: {name} package {file} fails its SHA-256 check "
                            "(corrupted or modified since export)")
    return file


def load(path: str | os.PathLike, *, options: TaylorSeerOptions | Mapping[str, Any] | None = None,
         device: str | torch.device | None = None,
         check_torch_version: bool = True) -> ExportedTaylorSeer:
    """Load an artefact written by `export` and return its runner.

    `options`: the options you expect it to have been exported with; any difference fails, naming
    the fields. `device`: the device you mean to run on; it must be the one it was exported for.
    The manifest's torch version must be this torch's. Each package is checked (size, SHA-256)
    before AOTInductor loads it; nothing is unpickled.
    """
    root = Path(path)
    manifest = read_manifest(root)
    try:
        settings = _check_manifest(manifest, root, device, options, check_torch_version)
        packages = manifest["packages"]
        files = {name: _verified_package(root, name, packages[name]) for name in PROGRAMS}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtefactError(f"ts_compile.load: {root}/{MANIFEST} lacks a field or has an invalid "
                            f"one ({type(err).__name__}: {err})") from err
    # torch 2.10's loader reads torch._inductor.codecache without importing it: in a process
    # that only loads (a server), that was an AttributeError.
    import torch._inductor.codecache  # noqa: F401
    from torch._inductor import aoti_load_package

    runners = {}
    for name, file in files.items():
        try:
            runners[name] = aoti_load_package(str(file))
        except Exception as err:  # noqa: BLE001 - report which package, keep the cause
            raise ArtefactError(f"ts_compile.load: AOTInductor could not load the {name} "
                                f"package {file}: {err}") from err
    try:
        return ExportedTaylorSeer(manifest, settings, runners["compute"], runners["forecast"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtefactError(f"ts_compile.load: {root}/{MANIFEST} lacks a field or has an invalid "
                            f"one ({type(err).__name__}: {err})") from err


# ------------------------------------------------------------------------------------------------
# runner
# ------------------------------------------------------------------------------------------------
def _frozen_config(config: Mapping[str, Any] | None):
    if config is None:
        return None
    try:
        from diffusers.configuration_utils import FrozenDict
    except ImportError:  # attribute access is all pipelines need
        return types.MappingProxyType(dict(config))
    return FrozenDict(config)


class ExportedTaylorSeer(torch.nn.Module):
    """The loaded artefact: one call = one denoising step, like the compiled model.

    Dispatch (compute or forecast, when the state resets) is the backend's `GraphRuntime` under a
    `Controller`, with the two AOTInductor programs as its compiled graphs; no Dynamo runs.
    It stands in for a diffusers transformer: `config` (from the manifest), `dtype`, `device`,
    `cache_context(name, step_index=..., num_inference_steps=...)` and `_reset_stateful_cache()`.
    """

    def __init__(self, manifest: dict[str, Any], options: TaylorSeerOptions, compute, forecast):
        super().__init__()
        self.manifest = manifest
        self.options = options
        self.config = _frozen_config(manifest["model"].get("config"))
        self._device = torch.device(manifest["device"])
        self._dtype = _DTYPES[manifest["model"]["dtype"]]
        self._in_spec = pytree.treespec_loads(manifest["inputs"]["in_spec"])
        self._out_spec = pytree.treespec_loads(manifest["outputs"]["out_spec"])
        self._leaves = manifest["inputs"]["leaves"]
        self._expected = [(i, torch.Size(leaf["shape"]), _DTYPES[leaf["dtype"]])
                          for i, leaf in enumerate(self._leaves) if leaf["kind"] == "tensor"]
        self._constants = [(i, leaf["value"]) for i, leaf in enumerate(self._leaves)
                           if leaf["kind"] == "constant"]
        self._packages = {"compute": compute, "forecast": forecast}
        state = manifest["state"]
        specs = [TableSpec(t["region"], t["output_index"], t["output_name"], tuple(t["shape"]),
                           _DTYPES[t["output_dtype"]]) for t in state["tables"]]
        self._controller = Controller(options)
        self._runtime = GraphRuntime(
            self._controller, self._program(compute), self._program(forecast), self._device,
            tables=specs, shapes=TableShapes([spec.shape for spec in specs]),  # static shapes
            region_names=list(manifest["regions"]),
            skipped=[tuple(s) for s in manifest["skipped_regions"]],
            time_index=manifest["inputs"].get("time_tensor_index"))

    @staticmethod
    def _program(package):
        run = package.loader.run  # flat tensors in, flat tensors out (no pytree per call)
        return lambda *flat: run(list(flat))

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
        leaves = [torch.zeros(leaf["shape"], dtype=_DTYPES[leaf["dtype"]], device=self._device)
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
        tensors = []
        for i, shape, dtype in self._expected:
            value = flat[i]
            if not (isinstance(value, torch.Tensor) and value.shape == shape
                    and value.dtype == dtype and value.device.type == self._device.type):
                raise ArtefactError(
                    f"ts_compile: input {i} must be a {self._device.type} tensor of shape "
                    f"{list(shape)} and dtype {dtype} (as exported), got " + _describe(value))
            tensors.append(value)
        for i, value in self._constants:
            if flat[i] != value or type(flat[i]) is not type(value):
                raise ArtefactError(f"ts_compile: input {i} was exported as the constant "
                                    f"{value!r}, got {_describe(flat[i])}")
        outputs = self._runtime(*tensors)
        return pytree.tree_unflatten(list(outputs), self._out_spec)

    def extra_repr(self) -> str:
        return (f"regions={len(self.manifest['regions'])}, device={self._device}, "
                f"options={self.options}")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.device.type} tensor of shape {list(value.shape)} and dtype {value.dtype}"
    return repr(value)


def package_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of each file of the artefact (for reports)."""
    return {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.is_file()}
