"""The `python -m ts_compile demo` command: runs end to end, writes a PNG, rejects bad options."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from ts_compile.__main__ import main
from ts_compile.demo import write_png

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
                 "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    for method in ("eager", "torch.compile", "taylorseer", "FORA"):
        assert method in captured.out
    assert str(out) in captured.out
    # 8 steps, warmup 3, interval 5: steps 0, 1, 2, 7 computed, 4 forecast (from ts_compile.stats)
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    assert "4 / 4" in rows["taylorseer (N=5, O=2)"]
    assert "4 / 4" in rows["FORA (N=5)"]
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


def test_write_png_roundtrip(tmp_path):
    path = tmp_path / "p.png"
    rgb = bytes(range(2 * 3 * 3))  # 3 wide, 2 high
    write_png(str(path), 3, 2, rgb)
    chunks = list(_chunks(path.read_bytes()))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (3, 2, 8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert raw == b"\x00" + rgb[:9] + b"\x00" + rgb[9:]
