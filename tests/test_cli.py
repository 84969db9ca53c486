"""`python -m ts_compile explain` and `bench`: reports, one-line errors, benchmark dispatch.

explain runs on the meta device (no weights) with the tiny default configs; the state bytes are the
ones of docs/models.md (tests/diffusers_models.py's configs; DiT there has batch 2, here 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ts_compile.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# class -> (blocks found, block-cut state bytes, paper-cut state bytes), order 2, float32, batch 1
EXPECTED = {
    "FluxTransformer2DModel": (5, 24576, 193536),
    "DiTTransformer2DModel": (3, 6144, 36864),
    "HunyuanVideoTransformer3DModel": (4, 18432, 129024),
    "SD3Transformer2DModel": (3, 6144, 36864),
    "PixArtTransformer2DModel": (3, 6144, 55296),
    "WanTransformer3DModel": (3, 13824, 124416),
}


def _state_rows(out: str) -> dict[str, str]:
    """cut -> its row of the 'Taylor state by cut' table."""
    table = out.split("Taylor state by cut", 1)[1]
    return {line.split()[0]: line for line in table.splitlines() if line[:1] in "'["}


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


@pytest.mark.parametrize("cls_name", list(EXPECTED))
def test_explain_every_class(cls_name, capsys):
    blocks, block_bytes, paper_bytes = EXPECTED[cls_name]
    code = main(["explain", cls_name])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"blocks found (cut='block' regions): {blocks}" in out
    assert "live outputs carrying Taylor state: 1" in out  # block cut: only the last block's
    rows = _state_rows(out)
    assert "(chosen)" in rows["'block'"] and f"{block_bytes:,}" in rows["'block'"], out
    assert f"{paper_bytes:,}" in rows["'paper'"], out


def test_explain_paper_cut_lists_live_outputs_with_shapes(capsys):
    code = main(["explain", "FluxTransformer2DModel", "--cut", "paper", "--order", "1",
                 "--state-dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "regions for cut='paper': 9" in out
    assert "live outputs carrying Taylor state: 11" in out
    assert "transformer_blocks.0.attn" in out and "1x64x32" in out
    assert "\nwhat each pass did:\n  mark_side_effects: " in out
    assert "  mark_live_outputs: 11 of " in out and "  take_forecast_branches: 9 guards" in out
    # order 1, bf16: 193536 fp32 bytes at order 2 -> x 2/3 x 1/2
    assert f"{193536 * 2 // 3 // 2:,}" in _state_rows(out)["'paper'"]


def test_explain_regex_cut_compares_with_both_named_cuts(capsys):
    code = main(["explain", "FluxTransformer2DModel", "--cut", r"transformer_blocks\.\d+\.ff$"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = _state_rows(out)
    assert set(rows) == {r"[transformer_blocks\.\d+\.ff$]", "'block'", "'paper'"}, out
    assert "(chosen)" in rows[r"[transformer_blocks\.\d+\.ff$]"] and f"{49152:,}" in out


def test_explain_cut_that_matches_nothing_says_so_and_returns_1(capsys):
    code = main(["explain", "SD3Transformer2DModel", "--cut", r"nomatch\.x"])
    out = capsys.readouterr().out
    assert code == 1
    assert "TaylorSeer does not apply with cut=[nomatch\\.x]: found no module path" in out
    assert "does not apply" in _state_rows(out)[r"[nomatch\.x]"]


def test_explain_config_json_overrides_the_default(capsys):
    code = main(["explain", "FluxTransformer2DModel", "--config", '{"num_single_layers": 5}',
                 "--height", "256", "--width", "128", "--text-tokens", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "blocks found (cut='block' regions): 7" in out
    assert "256x128: 128 image tokens, 4 text tokens" in out
    assert "1x128x32" in out  # the last single block's output: the 128 image tokens


def test_explain_config_path_and_folder(tmp_path, capsys):
    config = {"_class_name": "DiTTransformer2DModel", "_diffusers_version": "0.42.1",
              "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4,
              "out_channels": 8, "num_layers": 4, "sample_size": 16, "patch_size": 2,
              "norm_type": "ada_norm_zero", "num_embeds_ada_norm": 10}
    folder = tmp_path / "model" / "transformer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for given in (folder / "config.json", tmp_path / "model"):
        code = main(["explain", "DiTTransformer2DModel", "--config", str(given)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "blocks found (cut='block' regions): 4" in out
        assert "128x128: 64 image tokens" in out  # the config's sample_size 16 x VAE factor 8


def test_explain_takes_the_class_from_a_saved_config(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"_class_name": "WanTransformer3DModel", "num_layers": 2,
                                "num_attention_heads": 2, "attention_head_dim": 12,
                                "in_channels": 4, "out_channels": 4, "text_dim": 32,
                                "freq_dim": 32, "ffn_dim": 48, "rope_max_seq_len": 32}))
    code = main(["explain", "--config", str(path), "--height", "64", "--width", "64",
                 "--frames", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("WanTransformer3DModel")
    assert "64x64, 5 frames: 32 image tokens" in out


@pytest.mark.parametrize("argv, needle", [
    (["explain", "FluxTransformer"], "unknown model class 'FluxTransformer'"),
    (["explain", "UNet2DConditionModel"], "not one explain can build inputs for"),
    (["explain", "FluxTransformer2DModel", "--config", "{num_layers: 2}"], "not valid JSON"),
    (["explain", "FluxTransformer2DModel", "--config", "[1, 2]"], "not an object"),
    (["explain", "FluxTransformer2DModel", "--config", "no/such/config.json"],
     "neither a JSON object nor an existing file"),
    (["explain", "FluxTransformer2DModel", "--config", '{"num_layer": 2}'],
     "unknown config key(s) for FluxTransformer2DModel: num_layer"),
    (["explain", "FluxTransformer2DModel", "--config", '{"num_layers": "two"}'],
     "FluxTransformer2DModel(**config) failed"),
    (["explain", "FluxTransformer2DModel", "--order", "9"], "'order'"),
    (["explain", "FluxTransformer2DModel", "--cut", "("], "'cut'"),
    (["explain", "FluxTransformer2DModel", "--height", "100"], "--height 100"),
    (["explain", "FluxTransformer2DModel", "--frames", "9"], "--frames is for video models"),
    (["explain", "WanTransformer3DModel", "--frames", "8"], "--frames 8 is not 4k+1"),
    (["explain", "SD3Transformer2DModel", "--preset", "flux-dev"], "is a FluxTransformer2DModel"),
    (["explain"], "no MODEL_CLASS given"),
    (["explain", "FluxTransformer2DModel", "--device", "nowhere"], "is not a device"),
])
def test_explain_user_mistakes_are_one_line_and_a_hint(argv, needle, capsys):
    code = main(argv)
    _assert_one_line_error(code, capsys.readouterr().err, needle)


def test_explain_error_in_a_fresh_process_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "ts_compile", "explain", "NoSuchModel"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    _assert_one_line_error(proc.returncode, proc.stderr, "unknown model class")


# --- bench -------------------------------------------------------------------------------------

def test_bench_speed_help_is_the_scripts_own(capsys):
    code = main(["bench", "speed", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--rows" in out and "python -m ts_compile bench speed" in out


def test_bench_passes_the_arguments_and_the_exit_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "quality.py").write_text(
        "def main(argv):\n    print('got', argv)\n    return 3\n")
    monkeypatch.setenv("TS_COMPILE_BENCHMARKS", str(tmp_path))
    assert main(["bench", "quality", "--tiny", "-x", "1"]) == 3
    assert "got ['--tiny', '-x', '1']" in capsys.readouterr().out


def test_bench_missing_script_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TS_COMPILE_BENCHMARKS", str(tmp_path))
    code = main(["bench", "quality"])
    _assert_one_line_error(code, capsys.readouterr().err, "quality.py is missing")


def test_bench_without_a_checkout_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TS_COMPILE_BENCHMARKS", str(tmp_path / "absent"))
    code = main(["bench", "speed"])
    err = capsys.readouterr().err
    _assert_one_line_error(code, err, "no benchmarks folder")
    assert "root of a repository checkout" in err and "TS_COMPILE_BENCHMARKS" in err


def test_bench_script_without_main(tmp_path, monkeypatch, capsys):
    (tmp_path / "speed.py").write_text("X = 1\n")
    monkeypatch.setenv("TS_COMPILE_BENCHMARKS", str(tmp_path))
    _assert_one_line_error(main(["bench", "speed"]), capsys.readouterr().err, "no main(argv)")


@pytest.mark.parametrize("argv", [["bench", "latency"], ["bench"]])
def test_bench_usage_errors_return_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err


# --- argparse's own errors: one line and a hint, not a usage block -----------------------------

@pytest.mark.parametrize("argv, needle, hint", [
    (["demo", "--compiler", "inducter"], "invalid choice: 'inducter'", "did you mean 'inductor'?"),
    (["demo", "--steps", "abc"], "--steps: expected an int >= 1, got 'abc'", "demo --help"),
    (["explian"], "invalid choice: 'explian'", "did you mean 'explain'?"),
    (["explain", "FluxTransformer2DModel", "--order", "two"], "--order", "explain --help"),
    (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag", "demo --help"),
])
def test_argparse_errors_are_one_line_and_a_hint(argv, needle, hint, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    _assert_one_line_error(code, err, needle)
    assert "usage:" not in err and hint in err.splitlines()[1], err


def test_argparse_error_in_a_fresh_process_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "ts_compile", "demo", "--compiler", "inducter"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    _assert_one_line_error(proc.returncode, proc.stderr, "--compiler")
    assert "did you mean 'inductor'?" in proc.stderr


def test_help_still_exits_0(capsys):
    assert main(["demo", "--help"]) == 0
    assert "--checkpoint" in capsys.readouterr().out


def test_every_bench_speed_argument_has_help(capsys):
    assert main(["bench", "speed", "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.split("options:", 1)[1].splitlines()[1:]
    # an argument's line is "  --flag METAVAR  help..."; a long one has its help on the next,
    # deeper-indented line; without help text there is neither
    bare = [line.strip() for line, after in zip(lines, [*lines[1:], ""])
            if line.startswith("  -") and len(line.split()) <= 2
            and not (after.startswith("   ") and after.strip())]
    assert "--rows" in out and not bare, f"arguments without help: {bare}"


def test_explain_state_table_has_a_header_for_every_column(capsys):
    assert main(["explain", "DiTTransformer2DModel"]) == 0
    table = capsys.readouterr().out.split("Taylor state by cut", 1)[1].splitlines()
    header, rule = table[1], table[2]
    assert len(header.split()) >= len(rule.split()), table[:3]  # "live outputs" is two words
    assert header.split()[-1] == "size"


def test_explain_lists_the_passes_it_runs_in_order(capsys):
    from ts_compile.passes import PASSES, SPECIALIZATIONS

    assert main(["explain", "DiTTransformer2DModel"]) == 0
    section = capsys.readouterr().out.split("passes run", 1)[1].split("\n\n", 1)[0]
    listed = [line.split()[1] for line in section.splitlines()[1:]]
    assert listed == [p.__name__ for p in PASSES + SPECIALIZATIONS], section
    # each with the first line of its docstring, and none without one
    for run in PASSES + SPECIALIZATIONS:
        assert run.__doc__.strip().splitlines()[0] in section


def test_the_package_does_not_look_for_its_checkout(tmp_path, monkeypatch, capsys):
    """Outside a checkout (and without $TS_COMPILE_BENCHMARKS) bench says where to run it, and
    the demo finds no default checkpoint: neither looks next to the installed package."""
    from ts_compile.cli import demo_digits

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TS_COMPILE_BENCHMARKS", raising=False)
    monkeypatch.delenv(demo_digits.ENV, raising=False)
    _assert_one_line_error(main(["bench", "speed"]), capsys.readouterr().err,
                           f"no benchmarks folder at {tmp_path / 'benchmarks'}")
    assert demo_digits.resolve_checkpoint(None) is None
    monkeypatch.chdir(ROOT)  # the checkout's root: both are found
    assert demo_digits.resolve_checkpoint(None) == os.path.join(ROOT, demo_digits.DEFAULT_CHECKPOINT)
    assert main(["bench", "speed", "--help"]) == 0
