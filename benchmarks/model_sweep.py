"""The every-transformer sweep over diffusers' model classes, written into docs/models.md.

    python benchmarks/model_sweep.py                      # every class of tests/model_zoo.py
    python benchmarks/model_sweep.py --classes A,B        # re-run some; the others keep their row
    python benchmarks/model_sweep.py --render-only        # the doc from the stored results

Each class goes through `tests/model_sweep.py:sweep_one` (tiny config, random weights, CPU,
plain torch.compile, then backend="taylorseer" with the eager inner compiler on a 12-step
teacher-forced loop; see that module); the cause given for a failing class is its xfail reason in
tests/test_model_sweep.py. The results are kept per class in
benchmarks/model_sweep_results.json and the table is regenerated from all of them between the
markers of docs/models.md; the rest of that file is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from tests.model_sweep import (  # noqa: E402
    CRASH, EXACT_FALLBACK, EXACT_FORECASTING, EXACT_OTHER_REGIONS, OPTIONS, PLAIN_FAILS, REL_TOL,
    STEPS, WRONG, SweepResult, _classify, sweep_one)
from tests.model_zoo import ZOO  # noqa: E402
from tests.test_model_sweep import XFAIL  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "model_sweep_results.json")
DOC = os.path.join(ROOT, "docs", "models.md")
BEGIN = "<!-- BEGIN GENERATED (benchmarks/model_sweep.py) -->"
END = "<!-- END GENERATED -->"
ORDER = [EXACT_FORECASTING, EXACT_FALLBACK, EXACT_OTHER_REGIONS, WRONG, CRASH, PLAIN_FAILS]


def _blocks(row: dict) -> str:
    ours = ", ".join(f"{k} {v}" for k, v in row["blocks"].items()) or "-"
    test = ", ".join(f"{k}={v}" for k, v in row["test_blocks"].items())
    return f"{ours} (test: {test})" if test else ours


def _num(value, fmt: str = ".1e") -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else format(value, fmt)


def _plain(row: dict) -> str:
    if row["plain_fullgraph"] is None:
        return "fails"
    return "fullgraph" if row["plain_fullgraph"] else "graph breaks"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _declared(row: dict) -> str:
    """Regions against the block classes the model declares (`_repeated_blocks`)."""
    if not row["declared_blocks"]:
        return "-"
    notes = []
    if row["other_regions"]:
        notes.append(f"{len(row['other_regions'])} other")
    if row["blocks_not_regions"]:
        notes.append(f"{len(row['blocks_not_regions'])} blocks never")
    return ", ".join(notes) or "same"


def _reason(row: dict) -> str:
    """What the sweep saw, then the cause found for a known failure (the test's xfail reason)."""
    text = _cell(row["reason"])
    cause = XFAIL.get(row["name"])
    return f"{text} **Cause:** {_cell(cause, 240)}" if cause else text


def table(rows: list[dict]) -> str:
    head = ("| class | kind | blocks per list (ours; diffusers test config) | plain compile | "
            "graphs with regions / all | regions | vs declared blocks | live | computed steps: "
            "max rel err | forecast steps | forecast max rel err | reset | status | reason |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        forecast = max(row["forecast_rel"]) if row["forecast_rel"] else None
        reset = {True: "same", False: "DIFFERS", None: "-"}[row["reset_identical"]]
        graphs = f"{row['graphs']} / {row['graphs'] + len(row['fallbacks'])}"
        lines.append("| " + " | ".join([
            f"`{row['name']}`", row["kind"], _blocks(row), _plain(row), graphs,
            str(len(row["regions"])), _declared(row), str(row["live_outputs"]),
            _num(row["computed_rel"]), str(row["forecast_steps"]), _num(forecast, ".2f"), reset,
            row["status"], _reason(row)]) + " |")
    return "\n".join(lines)


def _breaks(rows: list[dict]) -> str:
    broken = [r for r in rows if r["plain_break"]]
    if not broken:
        return ""
    items = "\n".join(f"- `{r['name']}`: {_cell(r['plain_break'], 240)}" for r in broken)
    return ("Classes whose own code breaks the graph (plain `torch.compile(backend=\"eager\", "
            "fullgraph=True)` fails; the sweep then compiles with `fullgraph=False`):\n\n" + items)


def _versions() -> str:
    import diffusers

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return f"torch {torch.__version__}, diffusers {diffusers.__version__}, ts-compile at {commit}"


def render(results: dict[str, dict], meta: dict) -> str:
    rows = sorted(results.values(), key=lambda r: (ORDER.index(r["status"]), r["name"]))
    counts = ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in ORDER)
    parts = [
        BEGIN, "",
        f"Generated by `python benchmarks/model_sweep.py` on {meta['date']} ({meta['versions']}; "
        f"CPU, float32, {meta['seconds'] / 60:.1f} min for the classes run that time, load "
        f"average {meta['load']}). {len(rows)} classes: {counts}.",
        "",
        f"Options `{OPTIONS}` over {STEPS} steps (computed: 0, 3, 6, 9). \"computed steps: max "
        f"rel err\" is the worst `max|out - eager| / max|eager|` over the steps the backend "
        f"computed (or ran plainly after a fallback), on the inputs of the eager trajectory; a "
        f"computed step must be exact (bound {REL_TOL:g}). \"forecast max rel err\" is the same "
        f"on forecast steps, reported without a bound. \"reset\": a second generation after "
        f"`ts_compile.reset` is bitwise the first. \"live\": region outputs carrying Taylor "
        f"state. Blocks per list: the model's top-level module lists in our config, and the "
        f"block counts of diffusers' test config where there is one.",
        "", table(rows), "",
    ]
    breaks = _breaks(rows)
    if breaks:
        parts += [breaks, ""]
    parts.append(END)
    return "\n".join(parts)


def _reclassified(row: dict) -> dict:
    """A stored row with status and reason set by today's rules (no rerun needed)."""
    result = SweepResult(**{k: v for k, v in row.items() if k in SweepResult.__dataclass_fields__})
    result.skipped = [tuple(s) for s in result.skipped]
    _classify(result)
    return dataclasses.asdict(result)


def write_doc(text: str, path: str = DOC) -> None:
    with open(path) as f:
        old = f.read()
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## Every diffusers transformer class\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="",
                        help="comma-separated class names (default: every class of the zoo)")
    parser.add_argument("--no-doc", action="store_true", help="print the table, leave the doc")
    parser.add_argument("--render-only", action="store_true",
                        help="regenerate the doc from the stored results, run nothing")
    args = parser.parse_args(argv)
    if args.render_only:
        with open(RESULTS) as f:
            stored = json.load(f)
        write_doc(render({r["name"]: _reclassified(r) for r in stored["results"]}, stored["meta"]))
        print(f"wrote {os.path.relpath(DOC)} from {os.path.relpath(RESULTS)}")
        return 0
    names = [n for n in args.classes.split(",") if n] or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        print(f"error: unknown class(es) {', '.join(unknown)}", file=sys.stderr)
        print(f"hint: one of {', '.join(ZOO)}", file=sys.stderr)
        return 2

    results: dict[str, dict] = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = {r["name"]: r for r in json.load(f)["results"] if r["name"] in ZOO}
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        row = dataclasses.asdict(sweep_one(name))
        results[name] = row
        print(f"[{i}/{len(names)}] {name}: {row['status']} ({row['seconds']:.1f} s) "
              f"{row['reason'][:160]}", flush=True)
    meta = {"date": datetime.date.today().isoformat(), "versions": _versions(),
            "seconds": time.perf_counter() - start,
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    with open(RESULTS, "w") as f:
        json.dump({"meta": meta, "results": [results[n] for n in ZOO if n in results]}, f,
                  indent=1, default=str)
    text = render(results, meta)
    if args.no_doc:
        print(text)
    else:
        write_doc(text)
        print(f"wrote {os.path.relpath(DOC)} ({len(results)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
