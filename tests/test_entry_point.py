"""backend="taylorseer" works in a fresh interpreter without importing ts_compile first."""

import subprocess
import sys
import textwrap


def test_backend_found_through_entry_point():
    script = textwrap.dedent("""
        import sys, warnings, torch
        assert "ts_compile" not in sys.modules
        model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
                                      for _ in range(3)])
        compiled = torch.compile(model, backend="taylorseer", fullgraph=True,
                                 options={"compiler": "eager", "interval": 2, "warmup": 1})
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(4):
                compiled(torch.randn(2, 4))
        import ts_compile
        stats = ts_compile.stats(compiled)
        assert stats["regions"] == ["0", "1", "2"], stats
        assert stats["forecast_steps"] == 2, stats
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_import_loads_neither_diffusers_nor_the_command_line():
    """`import ts_compile` stays light: diffusers, tabulate and the command line load on use."""
    script = textwrap.dedent("""
        import sys
        import ts_compile
        print(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("diffusers", "tabulate", "PIL")
                     or m.startswith("ts_compile.cli")))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", result.stdout
