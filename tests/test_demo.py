"""The `python -m ts_compile demo` command: runs end to end, writes a PNG, rejects bad options.

The digits path runs against a random-weight checkpoint written here in the trained checkpoint's
format (the real one, benchmarks/checkpoints/flux_digits, need not exist).
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch

from ts_compile.cli import demo_digits, images, main
from ts_compile.options import TaylorSeerOptions

from .reference import official_schedule

# "computed / forecast" of the demo's 8-step runs: interval 5 and the default warm-up.
_COMPUTED = sum(official_schedule(TaylorSeerOptions.warmup, 5)(s) for s in range(8))
EXPECTED_SPLIT = f"{_COMPUTED} / {8 - _COMPUTED}"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_thread():
    """Small CPU models run faster and steadier on one thread (no OpenMP spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _chunks(data: bytes):
    assert data[:8] == PNG_SIGNATURE
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        yield kind, body
        pos += 12 + length


def test_demo_end_to_end(tmp_path, capsys, one_thread):
    out = tmp_path / "d.png"
    code = main(["demo", "--size", "test", "--steps", "8", "--compiler", "eager",
                 "--no-progress", "--no-checkpoint", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "digits" not in captured.out
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    for method in ("eager", "torch.compile", "taylorseer", "FORA"):
        assert method in captured.out
    assert str(out) in captured.out
    # 8 steps, warmup 3, interval 5: steps 0, 1, 2, 7 computed, 4 forecast (from ts_compile.stats)
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    assert EXPECTED_SPLIT in rows["taylorseer (N=5, O=2)"]
    assert EXPECTED_SPLIT in rows["FORA (N=5)"]
    assert "8 / 0" in rows["torch.compile (eager)"]
    assert "\r" not in captured.err  # --no-progress


def test_invalid_option_is_one_line_not_a_traceback(tmp_path, capsys):
    out = tmp_path / "d.png"
    code = main(["demo", "--size", "test", "--steps", "8", "--compiler", "eager",
                 "--no-progress", "--order", "9", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "'order'" in err
    assert "hint:" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["demo", "--steps", "0"], ["demo", "--compiler", "tvm"], []])
def test_usage_errors_return_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_missing_output_folder_fails_before_any_work(tmp_path, capsys):
    code = main(["demo", "--size", "test", "--no-progress", "--out",
                 str(tmp_path / "nowhere" / "d.png")])
    assert code == 2
    assert "error: cannot write" in capsys.readouterr().err


def test_latents_figure_labels_panels_and_shows_the_colour_scale():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(1, 64, 16, generator=g)
    taylorseer = reference + 0.05 * torch.randn(1, 64, 16, generator=g)
    fora = reference + 0.2 * torch.randn(1, 64, 16, generator=g)
    figure, scale = images.latents_figure(reference, taylorseer, fora, grid=8)
    expected = max(float((x - reference).abs().mean(-1).max()) for x in (taylorseer, fora))
    assert scale == pytest.approx(expected)
    pixels = torch.from_numpy(np.array(figure)).float()  # (height, width, 3)
    side = 8 * (images.PANEL_PIXELS // 8)
    top, gap = images.TITLE_H, images.GAP
    for p in range(5):  # a title (dark text) above each of the five panels
        x = gap + p * (side + gap)
        assert pixels[:top - 2, x:x + side].min() < 100, f"panel {p} has no title"
    # the colour bar right of the panels: white at the top (= scale), black at the bottom (= 0),
    # brighter all the way up
    bar = pixels[top + 1:top + side - 1, gap + 5 * (side + gap) + images.BAR_W // 2].sum(-1)
    assert bar[0] > 3 * 240 and bar[-1] < 3 * 15, (bar[0], bar[-1])
    assert torch.all(bar[:-1] >= bar[1:])


def test_digits_figure_puts_each_class_on_its_row(tmp_path):
    blank, ink = torch.zeros(20, 1, 8, 8), torch.zeros(20, 1, 8, 8)
    ink[[2 * 3, 2 * 3 + 1]] = 1.0  # class 3's two samples fully inked
    figure = images.digits_figure([("full compute", blank), ("TaylorSeer", ink)], per_class=2)
    path = tmp_path / "d.png"
    figure.save(path, format="PNG")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    gray = torch.from_numpy(np.array(figure.convert("L"))).float()
    side = 8 * images.DIGIT_PIXELS
    rows = [images.TITLE_H + r * (side + images.GAP) for r in range(10)]
    right = gray[:, figure.width // 2:]  # the second panel
    dark_rows = [r for r, y in enumerate(rows) if (right[y:y + side] == 0).sum() >= side * side]
    assert dark_rows == [3]


# --- the trained-checkpoint path ----------------------------------------------------------------

def write_digits_checkpoint(folder, cfg: str = "batched") -> None:
    """A random FluxTransformer2DModel in the trained checkpoint's format (2 + 2 blocks)."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    config = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2,
                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                  pooled_projection_dim=16, axes_dims_rope=(2, 2, 4), guidance_embeds=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        FluxTransformer2DModel(**config).save_pretrained(str(folder))
        save_file({"encoder_hidden_states": torch.randn(11, 2, 16),
                   "pooled_projections": torch.randn(11, 16)},
                  os.path.join(folder, "conditioning.safetensors"))
    sampler = {"image_size": 8, "patch": 2, "in_channels": 4, "shift": 3.0, "num_steps": 50,
               "guidance_scale": 1.5, "cfg": cfg, "pixel_range": [-1, 1], "notes": "random"}
    (folder / "sampler.json").write_text(json.dumps(sampler))


def _png_size(path) -> tuple[int, int]:
    kind, body = next(_chunks(path.read_bytes()))
    assert kind == b"IHDR"
    return struct.unpack(">II", body[:8])


def test_demo_with_a_checkpoint_samples_digit_grids(tmp_path, capsys, one_thread):
    ckpt = tmp_path / "ckpt"
    write_digits_checkpoint(ckpt)
    out = tmp_path / "d.png"
    code = main(["demo", "--size", "test", "--steps", "8", "--compiler", "eager",
                 "--no-progress", "--checkpoint", str(ckpt), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    # the timing table still runs on the random demo model ...
    assert EXPECTED_SPLIT in rows["taylorseer (N=5, O=2)"]
    # ... and the digits get their own rows: 8 steps (--steps), same schedule
    assert "8 / 0" in rows["digits: full compute"]
    assert EXPECTED_SPLIT in rows["digits: taylorseer (N=5, O=2)"]
    assert EXPECTED_SPLIT in rows["digits: FORA (N=5)"]
    assert "Not timed" in captured.out
    assert rows["digits: full compute"].split()[-3] == "0.00e+00"  # rel L2 against itself
    # the digits PNG: 3 panels of 10 rows x 2 digits of 64 px; the latents go beside it
    width, height = _png_size(out)
    assert height >= 10 * 64 and width >= 3 * 2 * 64, (width, height)
    latents = tmp_path / "d_latents.png"
    assert latents.read_bytes()[:8] == PNG_SIGNATURE
    assert str(out) in captured.out and str(latents) in captured.out


def test_digits_sampler_is_deterministic_and_uses_cfg(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    write_digits_checkpoint(ckpt_dir)
    ckpt = demo_digits.load_checkpoint(str(ckpt_dir))
    noise = demo_digits.initial_noise(ckpt, per_class=1)
    assert noise.shape == (10, 1, 8, 8)
    calls = []

    def model(**kw):
        calls.append(kw)
        return ckpt.model(**kw)

    with torch.no_grad():
        a = demo_digits.sample_digits(model, ckpt, noise, 3)
        b = demo_digits.sample_digits(ckpt.model, ckpt, noise, 3)
    assert torch.equal(a, b) and a.shape == (10, 1, 8, 8)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    first = calls[0]
    assert first["hidden_states"].shape == (20, 16, 4)  # batched CFG: cond rows then uncond rows
    assert torch.equal(first["encoder_hidden_states"][10:], ckpt.encoder_hidden_states[[10] * 10])
    assert torch.equal(first["encoder_hidden_states"][:10], ckpt.encoder_hidden_states[:10])
    assert first["img_ids"].shape == (16, 3) and first["txt_ids"].shape == (2, 3)
    sigmas = demo_digits.sigmas(3.0, 3)
    assert [float(c["timestep"][0]) for c in calls[:3]] == pytest.approx(sigmas[:3])
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == 0.0


def test_pack_is_fluxpipelines_layout_and_unpack_inverts_it():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    tokens = demo_digits.pack(x)
    assert tokens.shape == (2, 16, 4)
    # token (row i, col j) holds the 2x2 patch x[2i:2i+2, 2j:2j+2] in row-major order
    assert tokens[0, 1 * 4 + 2].tolist() == x[0, 0, 2:4, 4:6].flatten().tolist()
    assert torch.equal(demo_digits.unpack(tokens, 8, 8), x)


def test_checkpoint_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(demo_digits.ENV, raising=False)
    monkeypatch.setattr(demo_digits, "default_checkpoint", lambda: str(tmp_path / "absent"))
    assert demo_digits.resolve_checkpoint(None) is None  # absent default: the demo as before
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    monkeypatch.setattr(demo_digits, "default_checkpoint", lambda: str(partial))
    assert demo_digits.resolve_checkpoint(None) is None  # a training run still writing it
    monkeypatch.setenv(demo_digits.ENV, str(partial))
    with pytest.raises(demo_digits.CheckpointError, match="lacks"):
        demo_digits.resolve_checkpoint(None)
    assert demo_digits.resolve_checkpoint(None, disabled=True) is None


@pytest.mark.parametrize("damage", ["absent", "no_sampler", "bad_cfg", "bad_conditioning"])
def test_broken_checkpoint_is_one_line_and_a_hint(tmp_path, capsys, damage):
    ckpt = tmp_path / "ckpt"
    if damage != "absent":
        write_digits_checkpoint(ckpt)
    if damage == "no_sampler":
        (ckpt / "sampler.json").unlink()
    elif damage == "bad_cfg":
        sampler = json.loads((ckpt / "sampler.json").read_text())
        (ckpt / "sampler.json").write_text(json.dumps({**sampler, "cfg": "sequential"}))
    elif damage == "bad_conditioning":
        from safetensors.torch import save_file

        save_file({"encoder_hidden_states": torch.randn(10, 2, 16),
                   "pooled_projections": torch.randn(10, 16)},
                  str(ckpt / "conditioning.safetensors"))
    out = tmp_path / "d.png"
    code = main(["demo", "--size", "test", "--compiler", "eager", "--no-progress",
                 "--checkpoint", str(ckpt), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in err and not out.exists()
