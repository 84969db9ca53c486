"""benchmarks/quality.py: metric functions against known values, the committed checkpoints' format,
and the quick form of the benchmark end to end (tiny random DiT, eager inner compiler)."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from quality_lib import metrics as M  # noqa: E402
from quality_lib import models  # noqa: E402

from ts_compile.cli.demo_digits import pack, unpack  # noqa: E402
from ts_compile.integrations.diffusers_inputs import flux_image_ids  # noqa: E402


def test_metrics_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.psnr(x, x) == math.inf
    assert M.rel_l2(x, x) == 0.0
    y = (x + 0.1).clamp(-1, 1)
    assert M.ssim(y, x) < 1.0
    # a uniform error e in [-1, 1] images: PSNR = 10 log10(4 / e^2)
    z = torch.zeros(2, 1, 8, 8)
    assert M.psnr(z + 0.1, z) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)
    # Fréchet distance: identical sets ~0; N(0, I) vs N(m, 4 I) in d dims = |m|^2 + d
    feats = torch.randn(500, 8, generator=g)
    assert abs(M.frechet_of_sets(feats, feats)) < 1e-8
    d, m = 8, torch.full((8,), 0.5)
    fd = M.frechet_distance(torch.zeros(d), torch.eye(d), m, 4 * torch.eye(d))
    assert fd == pytest.approx(float((m ** 2).sum()) + d, rel=1e-9)
    # non-diagonal covariances: FD(C, C) = 0 for the same mean
    a = torch.randn(d, d, generator=g)
    c = a @ a.T + 0.1 * torch.eye(d)
    assert abs(M.frechet_distance(torch.zeros(d), c, torch.zeros(d), c)) < 1e-8


def test_flux_packing_matches_fluxpipeline():
    x = torch.randn(3, 1, 8, 8)
    tokens = pack(x)
    assert tokens.shape == (3, 16, 4)
    assert torch.equal(unpack(tokens, 8, 8), x)
    try:
        from diffusers import FluxPipeline
    except Exception:  # transformers missing: FluxPipeline refuses to import
        pytest.skip("FluxPipeline not importable")
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 3, 1, 8, 8))
    ids = FluxPipeline._prepare_latent_image_ids(3, 4, 4, torch.device("cpu"), torch.float32)
    assert torch.equal(flux_image_ids(4, 4), ids)  # the one FLUX ids builder


def test_committed_flux_checkpoint_format():
    folder = os.path.join(models.CHECKPOINTS, "flux_digits")
    if not os.path.isdir(folder):
        pytest.skip("no trained FLUX-like checkpoint")
    from safetensors.torch import load_file

    for name in ("config.json", "diffusion_pytorch_model.safetensors",
                 "conditioning.safetensors", "sampler.json"):
        assert os.path.exists(os.path.join(folder, name)), name
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(folder, "sampler.json")) as f:
        sampler = json.load(f)
    cond = load_file(os.path.join(folder, "conditioning.safetensors"))
    ehs, pooled = cond["encoder_hidden_states"], cond["pooled_projections"]
    assert ehs.dtype == pooled.dtype == torch.float32
    assert ehs.shape[0] == 11 and ehs.shape[2] == config["joint_attention_dim"]
    assert pooled.shape == (11, config["pooled_projection_dim"])
    assert {"image_size": 8, "patch": 2, "in_channels": 4, "num_steps": 50,
            "pixel_range": [-1, 1]}.items() <= sampler.items()
    assert sampler["cfg"] in ("batched", "none") and isinstance(sampler["shift"], float)
    assert "notes" in sampler and isinstance(sampler["guidance_scale"], float)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert size < 10.5 * 2 ** 20


def test_quick_benchmark_end_to_end(tmp_path):
    import quality

    rc = quality.main(["--quick", "--models", "dit", "--out", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "quality_results" / "quality_dit.json") as f:
        res = json.load(f)
    rows = res["rows"]
    assert {"full", "fora-N5-o0-block", "ts-N5-o2-block", "steps-4", "diffusers-default"} \
        <= set(rows)
    full = rows["full"]["per_seed"][0]
    assert full["psnr"] == math.inf and full["rel_l2"] == 0.0 and full["ssim"] == 1.0
    assert rows["full"]["flops_speedup"] == pytest.approx(1.0)
    for rid in ("fora-N5-o0-block", "ts-N5-o2-block"):
        row = rows[rid]
        assert row["schedule_ok"], rid  # ts_compile.stats counted the expected schedule
        # 12 steps, warm-up 3, N = 5: steps 0, 1, 2, 7 computed
        assert row["schedule"] == [0, 1, 2, 7]
        assert 1.5 < row["flops_speedup"] <= 12 / 4 + 1e-9
        assert row["per_seed"][0]["rel_l2"] > 0
        assert 0 <= row["per_seed"][0]["acc"] <= 1
    # A preset row runs the preset's settings (N=6, warm-up 3: steps 0, 1, 2, 8 of 12) and its
    # recursion, and differs from the plain recursion at those settings.
    preset = rows["official-flux-o1-block"]
    assert preset["schedule_ok"] and preset["schedule"] == [0, 1, 2, 8]
    assert preset["row"]["preset"] == "official-flux" and preset["row"]["method"] == "official"
    assert rows["steps-4"]["flops_speedup"] == pytest.approx(3.0)
    # diffusers' default patterns hook nothing on DiT: the row equals full compute
    assert rows["diffusers-default"]["per_seed"][0]["rel_l2"] == 0.0
    doc = (tmp_path / "quality.md").read_text()
    assert "ts-N5-o2-block" in doc and "FLOPs speedup" in doc
    assert (tmp_path / "img" / "quality_dit_fd_vs_speedup.png").exists()
    assert (tmp_path / "img" / "quality_dit_samples.png").exists()


def test_preset_rows_carry_the_official_recursion():
    from quality_lib.rows import preset_row, standard_rows

    from ts_compile import TaylorSeerOptions

    row = preset_row("official-flux", "paper", order=2)
    assert (row.id, row.interval, row.order, row.warmup) == ("official-flux-o2-paper", 6, 2, 3)
    options = TaylorSeerOptions.coerce(row.ts_options(task=None, compiler="eager"))
    assert (options.recursion, options.order, options.cut) == ("official-flux", 2, "paper")
    ids = {r.id for r in standard_rows("dit")}
    assert {"official-dit-o4-block", "official-dit-o4-paper", "official-dit-o2-block"} <= ids
    assert "official-flux-o1-block" in {r.id for r in standard_rows("flux")}


def test_measured_flops_of_compiled_graphs():
    """--flops-only counts the backend's compute and forecast graphs call by call."""
    import quality
    from quality_lib.flops import measure_generation
    from quality_lib.rows import Runner, standard_rows

    task = quality._quick_tasks(["dit"])["dit"]
    rows = {r.id: r for r in standard_rows("dit", quick=True, steps=12)}
    runner = Runner(task, "eager")
    full = measure_generation(task, runner, rows["full"])
    fora = measure_generation(task, runner, rows["fora-N5-o0-block"])
    assert (fora["compute_calls"], fora["forecast_calls"]) == (4, 8)
    assert fora["compute_step_flops"] == full["generation_flops"] // 12
    assert 0 < fora["forecast_step_flops"] < fora["compute_step_flops"] / 10
    assert fora["generation_flops"] == 4 * fora["compute_step_flops"] + 8 * fora["forecast_step_flops"]


@pytest.mark.parametrize("kind", ["dit", "flux"])
def test_both_training_commands_run_the_one_entry(kind, tmp_path):
    import subprocess

    out = tmp_path / kind
    subprocess.run([sys.executable, os.path.join(BENCH, f"train_{kind}.py"), "--steps", "1",
                    "--out", str(out)], check=True, cwd=tmp_path, timeout=600,
                   capture_output=True)
    record = json.loads((out / "train_log.json").read_text())
    assert record["model"] == kind and record["steps"] == 1 and record["load_at_end"]


def test_forecaster_study_runs_its_rows_and_renders_its_own_section(tmp_path):
    # The committed DiT, 1 seed x 4 samples, a few of the study's rows: each forecaster on the
    # same fixed schedule computes the same steps (equal FLOPs); the section is replaced, not
    # appended, when rendered again, and the main generated section is left alone.
    import quality

    doc = tmp_path / "quality.md"
    doc.write_text("# q\n\n<!-- BEGIN GENERATED (benchmarks/quality.py) -->\nmain\n"
                   "<!-- END GENERATED -->\n")
    args = ["--study", "forecasters", "--models", "dit", "--seeds", "0", "--samples", "4",
            "--rows", "^(taylor|hermite|newton)-N5-o2|steps-10", "--results",
            str(tmp_path / "r"), "--out", str(tmp_path)]
    (tmp_path / "img").mkdir()
    assert quality.main(args) == 0
    with open(tmp_path / "r" / "study_forecasters_dit.json") as f:
        rows = json.load(f)["rows"]
    assert set(rows) == {"full", "steps-10", "taylor-N5-o2-w1", "hermite-N5-o2-w1",
                         "newton-N5-o2-w1"}
    fixed = [rows[f"{f}-N5-o2-w1"] for f in ("taylor", "hermite", "newton")]
    assert all(r["schedule_ok"] and r["computed"] == 10 for r in fixed)
    assert len({r["flops_speedup"] for r in fixed}) == 1
    assert len({r["per_seed"][0]["rel_l2"] for r in fixed}) == 3  # three different forecasts
    assert quality.main(args + ["--render-only"]) == 0
    text = doc.read_text()
    assert text.count(quality.STUDY_BEGIN) == 1 and "\nmain\n" in text
    assert "newton-N5-o2-w1" in text and (tmp_path / "img" / "quality_dit_pareto.png").exists()


def test_adaptive_bounds_grid_keeps_its_bounds(tmp_path):
    # The committed DiT, 2 digits: every adaptive setting's chosen steps start at 0 and keep
    # the gaps within [min_interval, max_interval]; the fixed default computes its 10 steps.
    import adaptive_bounds

    args = ["--models", "dit", "--samples", "2", "--orders", "1", "--min", "5", "--max", "8",
            "--out", str(tmp_path)]
    assert adaptive_bounds.main(args) == 0
    with open(tmp_path / "adaptive_bounds_dit.json") as f:
        result = json.load(f)
    rows = result["rows"]
    assert len(rows) == len(adaptive_bounds.TOLERANCES[1]) + 1 and result["seed"] == 7
    for row in rows[:-1]:
        steps = row["steps"]
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        assert steps[0] == 0 and all(5 <= g <= 8 for g in gaps[:-1]), steps
        # the last gap may be shorter: a compute due at step 49 is taken at 48
        assert gaps[-1] <= 8 and (gaps[-1] >= 5 or steps[-1] == 48), steps
        assert row["computed"] == len(steps) and 50 - steps[-1] <= 8  # max_interval to the end
    assert rows[-1]["steps"] is None and rows[-1]["computed"] == 10
