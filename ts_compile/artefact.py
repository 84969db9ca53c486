"""What a deployment artefact is and how far it is trusted: the manifest, its checks, the packages'
own records, and the layout of the programs' inputs.

An artefact is a directory: `manifest.json` (JSON only) and two program packages (AOTInductor
`.pt2` or ONNX `.onnx`). At export, the manifest's content except the package list (its
"core") is also written *into* each package (`extra/ts_compile.json` inside a `.pt2`, a
`metadata_props` entry of an `.onnx`), with the program's role. At load:

1. the manifest's format, torch version, device and (when given) expected options are checked;
2. each package's size and SHA-256 are checked against the manifest;
3. each package's record must name the role the manifest gives the file and carry a core equal to
   the manifest's, field by field: an edit of the manifest alone fails, naming the field;
4. the loader then checks what the programs themselves report (deploy.py, onnx_programs.py).

None of this makes an untrusted artefact safe: a package is native code. See docs/deployment.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .calling import StateLayout
from .options import TaylorSeerOptions

FORMAT = "ts-compile-taylorseer"
FORMAT_VERSION = 4  # 3: program format, packages carry the manifest's core, input strides;
# 4: the scalars hold a divisor per row (taylor.py), options.forecaster
MANIFEST = "manifest.json"
PROGRAMS = ("compute", "forecast")
RECORD = "ts_compile.json"  # the record each package carries (an extra file / metadata key)
_MAX_MANIFEST_BYTES = 16 * 2**20

DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)}

# Entries of a .pt2 through which AOTInductor's Python loader unpickles: an embedded exported
# program (its `use_pickle` weights and constants, its opaque objects). `export` never writes them.
_PICKLE_ENTRIES = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/")


class ArtefactError(RuntimeError):
    """The artefact cannot be loaded here (mismatch, corruption) or a call does not fit it."""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_name(device: torch.device) -> str:
    return device.type if device.index is None else f"{device.type}:{device.index}"


def contiguous_strides(shape: list[int]) -> list[int]:
    """Row-major strides: the layout every program input is compiled for."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return strides[::-1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------
_NOT_IN_ARTEFACT = {"compiler"}  # the Dynamo path's inner compiler (may be a callable)


def options_to_json(settings: TaylorSeerOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        if field.name in _NOT_IN_ARTEFACT:
            continue
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


def options_from_json(data: Mapping[str, Any]) -> TaylorSeerOptions:
    data = dict(data)
    inductor = data.pop("inductor_config", {}) or {}
    return TaylorSeerOptions.coerce({**data, "inductor_config": inductor})


def option_mismatches(recorded: TaylorSeerOptions, expected: TaylorSeerOptions) -> list[str]:
    return [f"{f.name}: artefact has {getattr(recorded, f.name)!r}, expected "
            f"{getattr(expected, f.name)!r}"
            for f in dataclasses.fields(recorded)
            if f.name not in _NOT_IN_ARTEFACT
            and getattr(recorded, f.name) != getattr(expected, f.name)]


# ------------------------------------------------------------------------------------------------
# the programs' inputs
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One flat program input: where the manifest describes it, and the layout compiled for."""

    field: str  # manifest field, for messages: "inputs.leaves[1]", "state.tables[0]", ...
    name: str  # what the user knows it as: "timestep", "Taylor table 0 row 2", ...
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


def program_inputs(manifest: Mapping[str, Any]) -> list[InputSpec]:
    """Every input of both programs, in order: user tensors, table rows, the scalars vector."""
    specs = []
    for i, leaf in enumerate(manifest["inputs"]["leaves"]):
        if leaf["kind"] == "tensor":
            specs.append(InputSpec(f"inputs.leaves[{i}]", leaf.get("path", f"input {i}"),
                                   tuple(leaf["shape"]), tuple(leaf["stride"]),
                                   DTYPES[leaf["dtype"]]))
    state = manifest["state"]
    layout = StateLayout.from_manifest(state)
    rows = layout.row_shapes(layout.static_shapes())
    for i, shape in enumerate(rows):  # each table's rows in turn (calling.py)
        k, row = divmod(i, layout.rows_per_table)
        specs.append(InputSpec(f"state.tables[{k}]", f"Taylor table {k} row {row}", shape,
                               tuple(contiguous_strides(list(shape))), layout.dtype))
    length = state["scalars_length"]
    specs.append(InputSpec("state.scalars_length", "the per-step scalars", (length,), (1,),
                           torch.float32))
    return specs


def zeros_for(specs: list[InputSpec], device: torch.device) -> list[torch.Tensor]:
    return [torch.zeros(spec.shape, dtype=spec.dtype, device=device).as_strided(
        spec.shape, spec.stride) for spec in specs]


# ------------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The artefact's manifest, parsed as JSON (never unpickled)."""
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


def core(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What each package records of the manifest: everything but the package list itself."""
    return {k: v for k, v in manifest.items() if k != "packages"}


def check_manifest(manifest: dict[str, Any], path: Path, device: str | torch.device | None,
                   options: Any, check_torch_version: bool) -> TaylorSeerOptions:
    """Format, torch version, device and expected options: the mismatches a genuine artefact
    can have here (an edited one is caught by `check_records`)."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtefactError(f"ts_compile.load: {path} has format version {version!r}; this "
                            f"ts_compile reads version {FORMAT_VERSION}. Export it again.")
    built_with = manifest.get("torch_version")
    if check_torch_version and built_with != torch.__version__:
        raise ArtefactError(f"ts_compile.load: {path} was exported with torch {built_with}, this "
                            f"is torch {torch.__version__}; compiled packages are not portable "
                            "across torch versions. Export it again with this torch.")
    try:
        made_for = torch.device(manifest["device"])
    except (RuntimeError, TypeError) as err:
        raise ArtefactError(f"ts_compile.load: {path} records an invalid device "
                            f"{manifest['device']!r}: {err}") from err
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
        recorded = options_from_json(manifest["options"])
    except Exception as err:  # noqa: BLE001 - any invalid record is a corrupt manifest
        raise ArtefactError(f"ts_compile.load: {path} records invalid options: {err}") from err
    if options is not None:
        mismatches = option_mismatches(recorded, TaylorSeerOptions.coerce(options))
        if mismatches:
            raise ArtefactError(f"ts_compile.load: {path} was exported with other options: "
                                + "; ".join(mismatches))
    return recorded


def verified_package(path: Path, name: str, record: Mapping[str, Any]) -> Path:
    """The package file of program `name`, after its size and SHA-256 checks."""
    file = path / Path(str(record.get("file", ""))).name  # never outside the artefact
    if not file.is_file():
        raise ArtefactError(f"ts_compile.load: {name} package {file} is missing")
    size = file.stat().st_size
    if size != record.get("bytes"):
        raise ArtefactError(f"ts_compile.load: {name} package {file} has {size} bytes, the "
                            f"manifest says {record.get('bytes')} (truncated or replaced)")
    if sha256(file) != record.get("sha256"):
        raise ArtefactError(f"ts_compile.load: {name} package {file} fails its SHA-256 check "
                            "(corrupted or modified since export)")
    return file


def differing_fields(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ (type included: 1, 1.0 and True differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            out += [where] if key not in a or key not in b else differing_fields(a[key], b[key],
                                                                                where)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in differing_fields(u, v,
                                                                                  f"{path}[{i}]")]
    same = type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a)
                                              and math.isnan(b)))
    return [] if same else [path or "(whole manifest)"]


def check_records(manifest: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]],
                  files: Mapping[str, Path]) -> None:
    """Each package must be the program the manifest says and carry the manifest's core."""
    for name, record in records.items():
        role = record.get("role")
        if role != name:
            raise ArtefactError(
                f"ts_compile.load: manifest field packages.{name} names {files[name].name}, which "
                f"is the {role} program (its own record says so); the manifest was edited")
        fields = differing_fields(core(manifest), record.get("manifest"))
        if fields:
            shown = ", ".join(fields[:8]) + (", ..." if len(fields) > 8 else "")
            raise ArtefactError(
                f"ts_compile.load: manifest field(s) {shown} differ from what {files[name].name} "
                "recorded at export; the manifest was edited. Export the artefact again.")


# ------------------------------------------------------------------------------------------------
# the record inside an AOTInductor package (.pt2, a zip archive)
# ------------------------------------------------------------------------------------------------
def _archive_root(archive: zipfile.ZipFile) -> str:
    names = archive.namelist()
    if not names:
        raise ArtefactError(f"ts_compile.load: {archive.filename} is an empty archive")
    return names[0].split("/", 1)[0]


def embed_aoti_record(file: Path, role: str, manifest_core: Mapping[str, Any]) -> None:
    with zipfile.ZipFile(file, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{_archive_root(archive)}/extra/{RECORD}",
                         json.dumps({"role": role, "manifest": manifest_core}))


def read_aoti_record(file: Path, allow_pickle: bool) -> dict[str, Any]:
    """The package's record; refuses entries that AOTInductor's Python loader would unpickle."""
    try:
        with zipfile.ZipFile(file) as archive:
            root = _archive_root(archive)
            names = [n.removeprefix(f"{root}/") for n in archive.namelist()]
            pickled = [n for n in names if n.startswith(_PICKLE_ENTRIES)]
            if pickled and not allow_pickle:
                raise ArtefactError(
                    f"ts_compile.load: {file.name} embeds an exported program ({', '.join(pickled[:4])}"
                    f"{', ...' if len(pickled) > 4 else ''}) whose weights AOTInductor's loader "
                    "unpickles, which can run code; ts_compile.export never writes one. Load it "
                    "only if you trust its origin, with allow_pickle=True.")
            record = json.loads(archive.read(f"{root}/extra/{RECORD}").decode("utf-8"))
    except KeyError as err:
        raise ArtefactError(f"ts_compile.load: {file.name} carries no ts_compile record (not "
                            "written by ts_compile.export, or by an older version)") from err
    except (zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtefactError(f"ts_compile.load: {file.name} is not a readable package: {err}") \
            from err
    if not isinstance(record, dict):
        raise ArtefactError(f"ts_compile.load: {file.name} has an invalid ts_compile record")
    return record
