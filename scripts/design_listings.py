"""Regenerate the graph listings of docs/design.md §3 from today's passes.

    PYTHONPATH=$PWD python scripts/design_listings.py           # rewrite docs/design.md
    PYTHONPATH=$PWD python scripts/design_listings.py --check   # exit 1 if it is out of date

Each listing sits between `<!-- listing:NAME -->` and `<!-- /listing:NAME -->` in design.md.
The model is the worked example's (`tests.models.ModelSpec(width=8, lists=(3, 2))`, order 2),
traced by Dynamo and rewritten by `build_graphs`; the text is the graphs' printed code, cleaned
the same way every time: source-location comments, blank lines, placeholder aliases and the
`a = b = None` frees are dropped, and parameter names become `…` (runs of them one `…`).
`tests/test_docs.py` regenerates the listings in memory and fails when design.md differs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

# The listings are what this torch prints (other versions name and print nodes differently).
LISTINGS_TORCH = "2.13"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "design.md")

_PARAM = re.compile(  # a parameter's placeholder name, with its annotation if any
    r"\b[lL]_self_modules_\w+?_parameters_(?:weight|bias)_\b(?:: \"[^\"]*\"| : [\w.]+)?")
_ELIDED_RUN = re.compile(r"…(?:, …)+")
_FREES = re.compile(r";  [\w =]+ = None$")
_ALIAS = re.compile(r"^\s*(\w+) = ([lL]_\w+)$")
_MARKER = re.compile(r"(<!-- listing:(\w+) -->\n)(.*?)(<!-- /listing:\2 -->)", re.S)


def clean(code: str) -> list[str]:
    """The code's lines, with what changes from run to run or only adds noise taken out."""
    lines = []
    for line in code.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or _ALIAS.match(line):
            continue
        line = _ELIDED_RUN.sub("…", _PARAM.sub("…", _FREES.sub("", line.rstrip())))
        lines.append(line)
    return lines


def _dedent(lines: list[str]) -> list[str]:
    margin = min(len(line) - len(line.lstrip()) for line in lines)
    return [line[margin:] for line in lines]


def _section(lines: list[str], start: str, stop: str | None = None) -> list[str]:
    """From the first line containing `start` up to (not including) the next one holding `stop`
    at the same indentation or less (to the end without `stop`)."""
    first = next(i for i, line in enumerate(lines) if start in line)
    indent = len(lines[first]) - len(lines[first].lstrip())
    end = len(lines)
    if stop is not None:
        end = next((i for i in range(first + 1, len(lines))
                    if stop in lines[i] and len(lines[i]) - len(lines[i].lstrip()) <= indent), end)
    return lines[first:end]


def worked_example_graphs():
    """build_graphs on the worked example's Dynamo graph (eager: nothing is compiled)."""
    sys.path.insert(0, ROOT)
    import torch

    from tests.models import ModelSpec, build_model, make_inputs
    from ts_compile.options import TaylorSeerOptions
    from ts_compile.passes import build_graphs, declared_block_lists

    spec = ModelSpec(width=8, lists=(3, 2))
    model = build_model(spec)
    seen = {}

    def backend(gm, example_inputs, **_):
        seen["gm"] = gm
        return gm

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend, fullgraph=True)(make_inputs(spec), torch.tensor(0.25))
    return build_graphs(seen["gm"], TaylorSeerOptions(order=2), declared_block_lists(model))


def listings() -> dict[str, str]:
    """Listing name -> its Markdown (a fenced python block)."""
    graphs = worked_example_graphs()
    guarded = clean(graphs.guarded.print_readable(print_output=False))
    forward = _section(guarded, "def forward", "class ts_compute_0")
    dead = _section(guarded, "class ts_forecast_0", "class ")
    live_update = _section(guarded, "class ts_compute_4", "class ")
    body = live_update[2][:len(live_update[2]) - len(live_update[2].lstrip())]
    live_update = (live_update[:2] + [body + "…  # the block's nodes, as in the Dynamo graph"]
                   + _section(live_update, "updated_table ="))
    live = _section(guarded, "class ts_forecast_4", "class ")
    compute = clean(graphs.compute.code)
    forecast = clean(graphs.forecast.code)
    last_block = next(i for i, line in enumerate(compute) if "updated_table =" in line) - 1
    texts = {
        "guarded": ["# guarded.print_readable(): the forward, then three of the branch modules",
                    *_dedent(forward), *_dedent(dead), *_dedent(live_update), *_dedent(live)],
        "compute": ["# compute.code, from the last block's residual add on",
                    *_dedent(compute[:1] + compute[last_block:])],
        "forecast": ["# forecast.code: all of it", *_dedent(forecast)],
    }
    return {name: "```python\n" + "\n".join(lines) + "\n```\n" for name, lines in texts.items()}


def render(text: str, generated: dict[str, str]) -> str:
    """`text` with every marked listing replaced; a marker without a listing is an error."""
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in generated:
            raise KeyError(f"design.md marks a listing {name!r} this script does not make")
        return match.group(1) + generated[name] + match.group(4)

    rendered = _MARKER.sub(replace, text)
    missing = set(generated) - set(m.group(2) for m in _MARKER.finditer(text))
    if missing:
        raise KeyError(f"design.md has no markers for {sorted(missing)}")
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when design.md differs from the regenerated listings")
    args = parser.parse_args(argv)
    with open(DESIGN, encoding="utf-8") as f:
        text = f.read()
    rendered = render(text, listings())
    if args.check:
        if rendered != text:
            print("docs/design.md's listings are out of date: run "
                  "PYTHONPATH=$PWD python scripts/design_listings.py", file=sys.stderr)
            return 1
        return 0
    if rendered != text:
        with open(DESIGN, "w", encoding="utf-8") as f:
            f.write(rendered)
        print("docs/design.md: listings regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
