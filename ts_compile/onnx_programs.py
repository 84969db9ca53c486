"""The compute and forecast programs as ONNX models, run with ONNX Runtime (format="onnx").

ONNX has no in-place writes to graph inputs, so each program takes the Taylor state as inputs and
returns its new value as outputs: the compute program returns the model's outputs, then every
table row, then the scalars; the forecast program returns the model's outputs, then the scalars
(its non-finite counter). The runner copies the returned state into its own tensors, so the
dispatch (`GraphRuntime`) and the state (`TaylorState`) are the same as for AOTInductor.

Each model carries the manifest's core in its `metadata_props` (key `ts_compile.json`). At load,
ONNX Runtime reports each model's inputs (name, shape, element type) and outputs: the manifest's
layout must be the models' own, and the number of state outputs tells the compute program (all
table rows) from the forecast program (the scalars only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from .artefact import RECORD, ArtefactError, InputSpec
from .calling import StateLayout

_ELEMENT_TYPES = {"tensor(float)": torch.float32, "tensor(double)": torch.float64,
                  "tensor(float16)": torch.float16, "tensor(int64)": torch.int64,
                  "tensor(int32)": torch.int32, "tensor(bool)": torch.bool,
                  "tensor(uint8)": torch.uint8, "tensor(int8)": torch.int8}
_NO_NUMPY = {torch.bfloat16}  # ONNX Runtime's Python API passes tensors as numpy arrays


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ArtefactError(f"ts_compile: format='onnx' needs onnx, onnxscript and onnxruntime "
                            f"(pip install 'ts-compile[onnx]'): {err}") from err


class _Functional(torch.nn.Module):
    """The program with its state as explicit inputs and outputs: the state is cloned inside, so
    the in-place table and counter updates become outputs and no graph input is mutated."""

    def __init__(self, program: torch.nn.Module, num_state: int, role: str) -> None:
        super().__init__()
        self.program = program
        self.num_state = num_state
        self.role = role

    def forward(self, *flat: torch.Tensor):
        user = flat[:len(flat) - self.num_state]
        state = [t.clone() for t in flat[len(flat) - self.num_state:]]
        outputs = tuple(self.program(*user, *state))
        return (*outputs, *(state if self.role == "compute" else state[-1:]))


def export_program(program: torch.nn.Module, example: tuple, file: Path, *, num_state: int,
                   role: str) -> None:
    """Write one program as an ONNX model (one file, weights inline)."""
    bad = sorted({str(t.dtype) for t in example if t.dtype in _NO_NUMPY})
    if bad:
        raise ArtefactError(f"ts_compile.export: format='onnx' runs through ONNX Runtime's numpy "
                            f"interface, which has no {', '.join(bad)}; use state_dtype "
                            "'float32' or 'float16' and float32/float16 inputs, or format='aoti'")
    with torch.no_grad():
        torch.onnx.export(_Functional(program, num_state, role).eval(), example, str(file),
                          dynamo=True, external_data=False, verbose=False,
                          input_names=[f"in_{i}" for i in range(len(example))])


def embed_record(file: Path, role: str, manifest_core: Mapping[str, Any]) -> None:
    import onnx

    model = onnx.load(str(file))
    entry = model.metadata_props.add()
    entry.key, entry.value = RECORD, json.dumps({"role": role, "manifest": manifest_core})
    onnx.save(model, str(file))


def open_session(file: Path, name: str):
    """An ONNX Runtime session on the CPU, with torch's intra-op thread count (parsing a model
    runs no code from it; a custom-op library would have to be registered, which the runner
    never does)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as torch.set_num_threads says
    try:
        return onnxruntime.InferenceSession(str(file), options,
                                            providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - report which package, keep the cause
        raise ArtefactError(f"ts_compile.load: ONNX Runtime could not load the {name} program "
                            f"{file}: {err}") from err


def read_record(session, file: Path) -> dict[str, Any]:
    text = session.get_modelmeta().custom_metadata_map.get(RECORD)
    if text is None:
        raise ArtefactError(f"ts_compile.load: {file.name} carries no ts_compile record (not "
                            "written by ts_compile.export, or by an older version)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtefactError(f"ts_compile.load: {file.name} has an invalid ts_compile record") \
            from err
    return record if isinstance(record, dict) else {}


def check_session(session, name: str, file: Path, specs: list[InputSpec],
                  num_outputs: int, num_rows: int) -> None:
    """The manifest's layout must be the model's own inputs; its state outputs tell its role."""
    inputs = session.get_inputs()
    if len(inputs) != len(specs):
        raise ArtefactError(
            f"ts_compile.load: the manifest describes {len(specs)} program inputs (fields "
            f"inputs.leaves, state.tables, state.order), the {name} model {file.name} takes "
            f"{len(inputs)}")
    for spec, given in zip(specs, inputs):
        dtype = _ELEMENT_TYPES.get(given.type)
        if list(given.shape) != list(spec.shape) or dtype != spec.dtype:
            raise ArtefactError(
                f"ts_compile.load: manifest field {spec.field} ({spec.name}) describes shape "
                f"{list(spec.shape)} and dtype {spec.dtype}; the {name} model {file.name} takes "
                f"shape {list(given.shape)} and {given.type}")
    state_outputs = len(session.get_outputs()) - num_outputs
    role = {num_rows + 1: "compute", 1: "forecast"}.get(state_outputs)
    if role != name:
        raise ArtefactError(
            f"ts_compile.load: manifest field packages.{name} names {file.name}, which returns "
            f"{state_outputs} state outputs: it is {'the ' + role if role else 'not a'} "
            "program of this artefact")


def load_programs(sessions: Mapping[str, Any], files: Mapping[str, Path],
                  specs: list[InputSpec], manifest: Mapping[str, Any]) -> dict[str, Callable]:
    num_outputs = pytree.treespec_loads(manifest["outputs"]["out_spec"]).num_leaves
    layout = StateLayout.from_manifest(manifest["state"])
    programs = {}
    for name, session in sessions.items():
        check_session(session, name, files[name], specs, num_outputs, layout.num_rows)
        programs[name] = _runner(session, num_outputs, layout, name == "compute")
    return programs


def _runner(session, num_outputs: int, layout: StateLayout, writes_tables: bool) -> Callable:
    """`fn(*user, *rows, scalars) -> outputs` (calling.py), writing the returned state into the
    inputs (the rows only for the compute program; the scalars' counters for both)."""
    names = [i.name for i in session.get_inputs()]
    run = session.run

    def program(*flat: torch.Tensor) -> list[torch.Tensor]:
        results = run(None, {n: t.numpy() for n, t in zip(names, flat)})
        state = layout.state_inputs(flat) if writes_tables else flat[-1:]
        for target, value in zip(state, results[num_outputs:]):
            target.copy_(torch.from_numpy(value))
        return [torch.from_numpy(r) for r in results[:num_outputs]]

    return program
