"""format="onnx": both programs as ONNX models run with ONNX Runtime, the same runner protocol,
the same outputs as the Dynamo path at every step, the same manifest checks.

Needs the optional extra (`pip install -e ".[onnx]"`); skipped without it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import ts_compile
from ts_compile.artefact import RECORD, ArtefactError, core, sha256
from ts_compile.deploy import export, load
from ts_compile.runtime import Controller

from .conftest import compile_ts
from .diffusers_models import tiny_dit
from .export_artefacts import (DIT_OPTIONS, OPTIONS, TOL, dit_runner_against_dynamo,
                               flux_step_kwargs)
from .models import ModelSpec, build_model, make_inputs
from .pipelines import flux_pipeline

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def flux_onnx(tmp_path_factory):
    pipe, make_kwargs = flux_pipeline(cfg=True)
    path = export(pipe.transformer, (), flux_step_kwargs(1.0), options=OPTIONS, format="onnx",
                  path=tmp_path_factory.mktemp("flux_onnx") / "flux.tsonnx")
    return pipe, make_kwargs, path


@pytest.fixture(scope="module")
def dit_onnx(tmp_path_factory):
    model, make_kwargs = tiny_dit()
    path = export(model, (), make_kwargs(0, 6), options=DIT_OPTIONS, format="onnx",
                  path=tmp_path_factory.mktemp("dit_onnx") / "dit.tsonnx")
    return model, make_kwargs, path


def test_artefact_holds_two_onnx_models_without_input_mutation(flux_onnx):
    _, _, path = flux_onnx
    assert sorted(p.name for p in path.iterdir()) == ["compute.onnx", "forecast.onnx",
                                                     "manifest.json"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["program_format"] == "onnx"
    rows = (OPTIONS["order"] + 1) * len(manifest["state"]["tables"])
    for name, state_outputs in (("compute", rows + 1), ("forecast", 1)):
        model = onnx.load(str(path / f"{name}.onnx"))
        assert len(model.graph.output) == 1 + state_outputs  # FLUX's output, then the state
        record = json.loads({p.key: p.value for p in model.metadata_props}[RECORD])
        assert record["role"] == name and record["manifest"] == core(manifest)


def test_dit_matches_dynamo_path_every_step_and_resets_after_num_steps(dit_onnx):
    def as_pipelines_pass_it(kwargs):
        return dict(kwargs, timestep=kwargs["timestep"][:1].expand(2))

    # no reset(): num_steps ends each generation
    runner, compiled = dit_runner_against_dynamo(*dit_onnx, adjust=as_pipelines_pass_it)
    got, want = runner.stats(), ts_compile.stats(compiled)
    for key in ("regions", "live_outputs", "computed_steps", "forecast_steps", "state_bytes"):
        assert got[key] == want[key], key
    assert got["forecast_steps"] > 0


def test_flux_contexts_and_explicit_step_index_like_dynamo(flux_onnx):
    pipe, _, path = flux_onnx
    model = pipe.transformer
    runner = load(path)
    assert isinstance(runner.controller, Controller)  # the same dispatch as AOTInductor's runner
    compiled = compile_ts(model, fullgraph=False, **OPTIONS)
    with torch.no_grad():
        for i, step in enumerate([0, 1, 2, 3, 4, 5, 0, 1, 2, 3]):
            for name in ("cond", "uncond"):
                kwargs = flux_step_kwargs(1 - step / 10 + (0.05 if name == "uncond" else 0))
                with runner.cache_context(name, step_index=step):
                    got = runner(**kwargs)[0]
                with model.cache_context(name, step_index=step):
                    want = compiled(**kwargs)[0]
                torch.testing.assert_close(got, want, **TOL, msg=f"call {i} ({name})")
    assert runner.stats()["contexts"] == ["cond", "uncond"]
    assert runner.stats()["computed_steps"] == ts_compile.stats(compiled)["computed_steps"]


def test_pipeline_runs_with_the_onnx_runner(flux_onnx):
    pipe, make_kwargs, path = flux_onnx
    model = pipe.transformer
    try:
        pipe.transformer = load(path)
        with torch.no_grad():
            got = [pipe(**make_kwargs(height=32, width=32))[0] for _ in range(2)]
        pipe.transformer = compile_ts(model, fullgraph=False, **OPTIONS)
        with torch.no_grad():
            want = pipe(**make_kwargs(height=32, width=32))[0]
    finally:
        pipe.transformer = model
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0], got[1])  # the pipeline reset the state in between


def _forge_onnx(copy, manifest, roles):
    """Rewrite each model's record to match `manifest`, recompute the checksums."""
    for name in ("compute", "forecast"):
        file = copy / manifest["packages"][name]["file"]
        model = onnx.load(str(file))
        for prop in model.metadata_props:
            if prop.key == RECORD:
                prop.value = json.dumps({"role": roles[name], "manifest": core(manifest)})
        onnx.save(model, str(file))
    for name in ("compute", "forecast"):
        file = copy / manifest["packages"][name]["file"]
        manifest["packages"][name].update(bytes=file.stat().st_size, sha256=sha256(file))
    (copy / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_edits_and_forgeries_fail_like_aoti(flux_onnx, tmp_path):
    _, _, path = flux_onnx
    original = json.loads((path / "manifest.json").read_text())
    copy = tmp_path / "copy.tsonnx"
    shutil.copytree(path, copy)

    def edited(change):
        manifest = json.loads(json.dumps(original))
        change(manifest)
        return manifest

    def interval(m):
        m["options"]["interval"] = 5

    def table_shape(m):
        m["state"]["tables"][0]["shape"] = [1, 32, 32]

    def swap(m):
        m["packages"]["compute"], m["packages"]["forecast"] = (m["packages"]["forecast"],
                                                               m["packages"]["compute"])

    (copy / "manifest.json").write_text(json.dumps(edited(interval)))
    with pytest.raises(ArtefactError, match=r"manifest field\(s\) options\.interval differ"):
        load(copy)
    (copy / "manifest.json").write_text(json.dumps(edited(swap)))
    with pytest.raises(ArtefactError, match=r"packages\.compute names forecast\.onnx, which is "
                                            r"the forecast program"):
        load(copy)
    _forge_onnx(copy, edited(swap), {"compute": "compute", "forecast": "forecast"})
    with pytest.raises(ArtefactError, match=r"packages\.compute names forecast\.onnx, which "
                                            r"returns 1 state outputs: it is the forecast"):
        load(copy)
    shutil.rmtree(copy)
    shutil.copytree(path, copy)
    _forge_onnx(copy, edited(table_shape), {"compute": "compute", "forecast": "forecast"})
    with pytest.raises(ArtefactError, match=r"manifest field state\.tables\[0\] .*describes "
                                            r"shape \[1, 32, 32\].*takes shape \[1, 64, 32\]"):
        load(copy)


def test_onnx_refuses_what_it_cannot_run(tmp_path):
    spec = ModelSpec(width=8, lists=(2,), seed=1)
    model, x = build_model(spec), make_inputs(spec, tokens=4)
    with pytest.raises(ArtefactError, match=r"format='onnx'.*no torch\.bfloat16"):
        export(model, (x, torch.tensor(1.0)), options={"state_dtype": "bfloat16"},
               format="onnx", path=tmp_path / "bf16.tsonnx")
    with pytest.raises(ArtefactError, match=r"format='tflite' is not one of 'aoti', 'onnx'"):
        export(model, (x, torch.tensor(1.0)), format="tflite", path=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
