"""The command line and the demo, apart from the compiler (`python -m ts_compile`, `ts-compile`).

    main.py          the parser and the dispatch: demo | explain | bench
    errors.py        user mistakes as one `error:` line and one `hint:` line, exit code 2
    demo.py          full compute vs taylorseer vs FORA on a small random FLUX (the main job)
    demo_digits.py   ... and on a trained digits checkpoint, when one is given or found
    images.py        the demo's pictures
    toy_models.py    the small random FLUX transformers of the demo, the tests and benchmarks
    explain.py       regions, cuts and Taylor state of a diffusers transformer (meta device)
    bench.py         runs a benchmark script of a repository checkout

Nothing here is imported by `import ts_compile`.
"""

from .main import main

__all__ = ["main"]
