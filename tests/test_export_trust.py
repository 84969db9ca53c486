"""What `load` trusts: every manifest edit fails naming the field, forged packages fail on what the
programs themselves report, and pickled data inside a package is never unpickled by default.

The edits are the ones that crashed or silently misbehaved before (issue 14): state dtype, a table
shape, an input shape, compute and forecast swapped, the interval; then the same edits with the
packages' own records rewritten to match and their checksums recomputed; then a fuzz of every
manifest field. Uses the tiny FLUX artefact of tests/export_artefacts.py.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ts_compile.artefact import RECORD, ArtefactError, core, sha256
from ts_compile.deploy import load

from .export_artefacts import OPTIONS, flux_step_kwargs

pytestmark = pytest.mark.export


def _copy(path, tmp_path, name="copy.tsaot"):
    target = tmp_path / name
    shutil.copytree(path, target)
    return target


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, manifest):
    (path / "manifest.json").write_text(json.dumps(manifest))


def _leaf_index(manifest, name):
    return next(i for i, leaf in enumerate(manifest["inputs"]["leaves"]) if leaf["path"] == name)


def _set_state_dtype(m):
    m["state"]["dtype"] = "bfloat16"


def _set_table_shape(m):
    m["state"]["tables"][0]["shape"] = [1, 32, 32]


def _set_input_shape(m):
    m["inputs"]["leaves"][_leaf_index(m, "hidden_states")]["shape"] = [1, 32, 16]


def _swap_packages(m):
    m["packages"]["compute"], m["packages"]["forecast"] = (m["packages"]["forecast"],
                                                           m["packages"]["compute"])


def _set_interval(m):
    m["options"]["interval"] = m["schedule"]["interval"] = 5


EDITS = {  # edit -> what the error must name
    "state dtype": (_set_state_dtype, r"manifest field\(s\) state\.dtype differ"),
    "table shape": (_set_table_shape, r"manifest field\(s\) state\.tables\[0\]\.shape\[1\] differ"),
    "input shape": (_set_input_shape, r"manifest field\(s\) inputs\.leaves\[\d+\]\.shape\[1\] differ"),
    "compute and forecast swapped": (_swap_packages, r"manifest field packages\.compute names "
                                                     r"forecast\.pt2, which is the forecast "
                                                     r"program"),
    "interval": (_set_interval, r"manifest field\(s\) options\.interval, schedule\.interval "
                                r"differ"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_each_manifest_edit_fails_naming_the_field(flux, tmp_path, edit):
    _, _, path = flux
    change, message = EDITS[edit]
    copy = _copy(path, tmp_path)
    manifest = _manifest(copy)
    change(manifest)
    _write_manifest(copy, manifest)
    with pytest.raises(ArtefactError, match=message):
        load(copy)


# ------------------------------------------------------------------------------------------------
# forged: the packages' records rewritten to match the edit, checksums recomputed
# ------------------------------------------------------------------------------------------------
def _rewrite_zip(file, replace):
    """Rebuild the .pt2 with `replace(name, data) -> data | None` (None drops the entry)."""
    entries = []
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            data = replace(info.filename, archive.read(info))
            if data is not None:
                entries.append((info.filename, data))
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(name, data)


def _forge(copy, manifest, roles=None):
    """Make the packages agree with `manifest` (records, sizes, checksums): what someone who
    rewrites the whole artefact can do. `roles`: the role each file's record claims."""
    for name in ("compute", "forecast"):
        file = copy / manifest["packages"][name]["file"]
        role = (roles or {}).get(name, name)
        record = json.dumps({"role": role, "manifest": core(manifest)}).encode()
        _rewrite_zip(file, lambda n, data: record if n.endswith(f"extra/{RECORD}") else data)
    for name in ("compute", "forecast"):
        file = copy / manifest["packages"][name]["file"]
        manifest["packages"][name].update(bytes=file.stat().st_size, sha256=sha256(file))
    _write_manifest(copy, manifest)


FORGED = {  # edit -> what the program reported (its own input checks, its writes)
    "state dtype": (_set_state_dtype, r"manifest field state\.tables\[0\] \(Taylor table 0 row 0\)"
                                      r" does not match the compute package compute\.pt2: "
                                      r"unmatched dtype"),
    "table shape": (_set_table_shape, r"manifest field state\.tables\[0\] .*unmatched dim value "
                                      r"at 1, expected: 64, but got: 32"),
    "input shape": (_set_input_shape, r"manifest field inputs\.leaves\[\d+\] \(hidden_states\) "
                                      r".*unmatched dim value at 1, expected: 64, but got: 32"),
    "compute and forecast swapped": (_swap_packages, r"manifest field packages\.compute names "
                                                     r"forecast\.pt2, which does not write the "
                                                     r"Taylor tables: it is the forecast program"),
}


@pytest.mark.parametrize("edit", list(FORGED))
def test_forged_packages_fail_on_what_the_programs_report(flux, tmp_path, edit):
    _, _, path = flux
    change, message = FORGED[edit]
    copy = _copy(path, tmp_path)
    manifest = _manifest(copy)
    change(manifest)
    _forge(copy, manifest)
    with pytest.raises(ArtefactError, match=message):
        load(copy)


def test_a_forged_interval_is_caught_by_the_expected_options(flux, tmp_path):
    """Host-side options are not compiled into the programs: only what you expect can catch a
    consistent rewrite of them (docs/deployment.md, trust model)."""
    _, _, path = flux
    copy = _copy(path, tmp_path)
    manifest = _manifest(copy)
    _set_interval(manifest)
    _forge(copy, manifest)
    assert load(copy).options.interval == 5  # consistent: nothing in the artefact contradicts it
    with pytest.raises(ArtefactError, match=r"interval: artefact has 5, expected 3"):
        load(copy, options=OPTIONS)


# ------------------------------------------------------------------------------------------------
# fuzz: any change to any manifest field fails with ArtefactError (never a crash)
# ------------------------------------------------------------------------------------------------
def _field_paths(value, path=()):
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _field_paths(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _field_paths(v, (*path, i))] or [path]
    return [path]


def _mutated(value, how: int):
    """Another JSON value (never an equal one) for `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return [value + 1, value - 1, -value - 1, str(value), None][how % 5]
    if isinstance(value, float):
        return [value * 2 + 1, -value - 1, str(value), None, int(value)][how % 5]
    if isinstance(value, str):
        return [value + "x", value[:-1] or "x", "" if value else "x", None, 0][how % 5]
    if isinstance(value, list):
        return [[*value, value[-1] if value else 0], value[:-1] if value else [0], None, {},
                0][how % 5]
    if isinstance(value, dict):
        return [{**value, "extra": 1}, None, [], 0, ""][how % 5]
    return [0, "", [], {}, False][how % 5]  # None


@pytest.fixture(scope="module")
def fuzz_copy(flux, tmp_path_factory):
    _, _, path = flux
    copy = _copy(path, tmp_path_factory.mktemp("fuzz"))
    return copy, _manifest(copy)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_manifest_fields_fail_with_artefact_error(fuzz_copy, data):
    copy, original = fuzz_copy
    manifest = json.loads(json.dumps(original))
    path = data.draw(st.sampled_from(sorted(_field_paths(manifest), key=str)), label="field")
    how = data.draw(st.integers(0, 4), label="mutation")
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if path:
        parent[path[-1]] = _mutated(parent[path[-1]], how)
    else:
        manifest = _mutated(manifest, how)
    _write_manifest(copy, manifest)
    try:
        with pytest.raises(ArtefactError):
            load(copy)
    finally:
        _write_manifest(copy, original)


# ------------------------------------------------------------------------------------------------
# pickles
# ------------------------------------------------------------------------------------------------
class _WritesMarker:
    """Unpickling this writes a file: what a planted pickle could do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant_pickle(pt2, marker):
    """Embed an exported program whose weight is a pickle (use_pickle) in `pt2`, as the issue's
    test did: AOTInductor's Python loader unpickles it (torch.load(weights_only=False))."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), buffer)
    with zipfile.ZipFile(buffer) as source:
        planted = {n.split("/", 1)[1]: source.read(n) for n in source.namelist()
                   if "/models/" in n or "/data/" in n}
    config = json.loads(planted["data/weights/model_weights_config.json"])
    config["config"]["weight"]["use_pickle"] = True
    planted["data/weights/model_weights_config.json"] = json.dumps(config).encode()
    planted["data/weights/weight_0"] = pickle.dumps(_WritesMarker(marker))
    with zipfile.ZipFile(pt2) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(pt2, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in planted.items():
            archive.writestr(f"{root}/{name}", data)


def test_a_planted_pickle_is_refused_and_not_run_unless_allowed(flux, tmp_path):
    _, _, path = flux
    copy = _copy(path, tmp_path)
    marker = tmp_path / "pickle_ran"
    _plant_pickle(copy / "compute.pt2", marker)
    manifest = _manifest(copy)
    file = copy / "compute.pt2"
    manifest["packages"]["compute"].update(bytes=file.stat().st_size, sha256=sha256(file))
    _write_manifest(copy, manifest)  # the checksum recomputed: only the pickle check is left
    with pytest.raises(ArtefactError, match=r"compute\.pt2 embeds an exported program "
                                            r"\(data/weights/weight_0.*allow_pickle=True"):
        load(copy)
    assert not marker.exists()
    # Opting in hands the package to AOTInductor's own loader, which unpickles it: the planted
    # code runs (what the refusal prevents), whatever happens afterwards.
    try:
        load(copy, allow_pickle=True)
    except ArtefactError:
        pass
    assert marker.read_text() == "ran"


def test_the_runner_never_unpickles(flux, monkeypatch):
    """Loading and running a genuine artefact calls no unpickler at all."""
    _, _, path = flux

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load or call")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    runner = load(path)
    with torch.no_grad():
        runner(**flux_step_kwargs(1.0))
