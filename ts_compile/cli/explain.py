"""`python -m ts_compile explain MODEL_CLASS`: what the pass would do with a diffusers transformer.

Builds the model from a config (on the `meta` device by default: shapes only, no weights, no
memory, so published sizes cost nothing), makes one call's inputs
(`ts_compile.integrations.diffusers_inputs`), traces it with `ts_compile.explain` and prints the
blocks found, the regions of the chosen cut, the outputs that carry Taylor state (shape, dtype,
state bytes) and, for comparison, the state of the other cuts.

    state bytes = (order + 1) x sum over live outputs of numel x itemsize(state_dtype)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TextIO

import torch

from ..calling import state_bytes
from ..options import CUTS, MAX_ORDER, STATE_DTYPES, OptionError, TaylorSeerOptions
from .errors import CliError

LIVE_ROWS = 24  # more live outputs than this are grouped by block pattern unless --all


def add_parser(commands: Any) -> argparse.ArgumentParser:
    from ..integrations.diffusers_inputs import MODEL_SPECS, PRESETS

    p = commands.add_parser(
        "explain", help="show the regions, cuts and Taylor state for a diffusers transformer",
        description="Build a diffusers transformer from a config (meta device: no weights, no "
                    "memory), trace one call with ts_compile.explain and print the blocks found, "
                    "the regions of the cut, the outputs that carry Taylor state and its bytes. "
                    f"Classes: {', '.join(MODEL_SPECS)}.",
        epilog="examples:\n"
               "  python -m ts_compile explain FluxTransformer2DModel\n"
               "  python -m ts_compile explain --preset flux-dev --cut paper\n"
               "  python -m ts_compile explain FluxTransformer2DModel --config "
               "path/to/transformer/config.json --height 768 --width 1360\n"
               "  python -m ts_compile explain WanTransformer3DModel --config "
               "'{\"num_layers\": 6}' --frames 17",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_class", nargs="?", metavar="MODEL_CLASS",
                   help="diffusers class name, e.g. FluxTransformer2DModel (optional with "
                        "--preset)")
    p.add_argument("--config", metavar="JSON_OR_PATH",
                   help="a JSON object, or a config.json (or a folder holding config.json or "
                        "transformer/config.json). A saved config.json (it names _class_name) "
                        "is used as it is; other JSON overrides keys of the default config")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="start from a published config at its usual size (default: a tiny "
                        "config of the class)")
    p.add_argument("--cut", nargs="+", default=["block"], metavar="CUT",
                   help="block (default), paper, or regular expressions over module paths")
    p.add_argument("--order", type=int, default=2, help=f"Taylor order 0..{MAX_ORDER} (2)")
    p.add_argument("--state-dtype", default="float32", choices=sorted(STATE_DTYPES),
                   help="dtype of the Taylor state (float32)")
    p.add_argument("--height", type=int, help="image height in pixels (VAE factor 8)")
    p.add_argument("--width", type=int, help="image width in pixels")
    p.add_argument("--frames", type=int, help="video frames, 4k+1 (video models only)")
    p.add_argument("--text-tokens", type=int, help="text tokens of the prompt embedding")
    p.add_argument("--batch", type=int, default=1, help="batch of one call (1; CFG batched: 2)")
    p.add_argument("--device", default="meta",
                   help="meta (default: shapes only) or a real device, e.g. cpu (random "
                        "weights, real memory)")
    p.add_argument("--all", action="store_true", help="list every live output")
    p.add_argument("--graph", action="store_true", help="also print the guarded graph")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    return p


# --- config ------------------------------------------------------------------------------------

def load_config(text: str) -> tuple[dict[str, Any], str]:
    """A JSON object from a string or a file; returns it and where it came from."""
    stripped = text.strip()
    if stripped[:1] in "{[":
        source, raw = "--config JSON", stripped
    else:
        path = text
        if os.path.isdir(path):
            for candidate in ("config.json", os.path.join("transformer", "config.json")):
                if os.path.isfile(os.path.join(path, candidate)):
                    path = os.path.join(path, candidate)
                    break
            else:
                raise CliError(f"no config.json in folder {text!r}",
                               "pass the model's transformer/config.json or a JSON object")
        if not os.path.isfile(path):
            raise CliError(f"--config {text!r} is neither a JSON object nor an existing file",
                           "pass a JSON object such as '{\"num_layers\": 4}' or a config.json "
                           "path")
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
        except OSError as err:
            raise CliError(f"cannot read {path!r}: {err.strerror}",
                           "check the path and its permissions") from None
        source = path
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CliError(f"{source} is not valid JSON: {err.msg} at line {err.lineno} column "
                       f"{err.colno}", "JSON needs double quotes, e.g. '{\"num_layers\": 4}'"
                       ) from None
    if not isinstance(config, dict):
        raise CliError(f"{source} holds a JSON {type(config).__name__}, not an object",
                       "pass an object of config keys, e.g. '{\"num_layers\": 4}'")
    return config, source


def _resolve(args: argparse.Namespace):
    """(class name, config, size, what the config is) from the arguments."""
    import dataclasses

    from ..integrations.diffusers_inputs import MODEL_SPECS, PRESETS, ConfigError, model_class

    preset = PRESETS[args.preset] if args.preset else None
    cls_name = args.model_class
    given: dict[str, Any] | None = None
    source = ""
    if args.config is not None:
        given, source = load_config(args.config)
    if cls_name is None:
        cls_name = preset.cls_name if preset else (given or {}).get("_class_name")
        if cls_name is None:
            raise CliError("no MODEL_CLASS given",
                           f"name one: {', '.join(MODEL_SPECS)} (or pass --preset)")
    try:
        model_class(cls_name)
    except ConfigError as err:
        raise CliError(str(err), err.hint) from None
    if preset is not None and preset.cls_name != cls_name:
        raise CliError(f"--preset {args.preset} is a {preset.cls_name}, not a {cls_name}",
                       f"presets for {cls_name}: "
                       f"{', '.join(n for n, p in PRESETS.items() if p.cls_name == cls_name) or 'none'}")
    spec = MODEL_SPECS[cls_name]
    base, size, what = ((dict(preset.config), preset.size, f"preset {args.preset}") if preset
                        else (dict(spec.tiny), spec.tiny_size, "tiny default config"))
    if given is not None:
        if "_class_name" in given:  # a saved config.json: complete, the class defaults fill in
            base, what = given, f"config {source}"
            if preset is None:  # a real model: a real size
                size = _published_size(cls_name, given, spec.tiny_size)
        else:
            base.update(given)
            what += f" + {source}"
    size = dataclasses.replace(
        size, height=args.height or size.height, width=args.width or size.width,
        frames=args.frames if args.frames is not None else size.frames,
        text_tokens=args.text_tokens or size.text_tokens, batch=args.batch)
    return cls_name, base, size, what


def _published_size(cls_name: str, config: dict[str, Any], fallback):
    """A typical size for a saved config: its sample_size, else the class's preset size."""
    import dataclasses

    from ..integrations.diffusers_inputs import PRESETS, VAE_FACTOR

    sample = config.get("sample_size")
    if isinstance(sample, int) and sample > 0:
        base = next((p.size for p in PRESETS.values() if p.cls_name == cls_name), fallback)
        return dataclasses.replace(base, height=sample * VAE_FACTOR, width=sample * VAE_FACTOR)
    for preset in PRESETS.values():
        if preset.cls_name == cls_name:
            return preset.size
    return fallback


def _cut_value(cut: Sequence[str]) -> str | tuple[str, ...]:
    return cut[0] if len(cut) == 1 and cut[0] in CUTS else tuple(cut)


def _label(cut: str | tuple[str, ...]) -> str:
    """'block', 'paper', or the expressions as typed: [attn$, ff$]."""
    return repr(cut) if isinstance(cut, str) else "[" + ", ".join(cut) + "]"


# --- report ------------------------------------------------------------------------------------

def fmt_bytes(n: int) -> str:
    if n >= 2 ** 30 / 100:
        return f"{n / 2 ** 30:.3f} GiB"
    if n >= 2 ** 20 / 10:
        return f"{n / 2 ** 20:.2f} MiB"
    return f"{n / 2 ** 10:.1f} KiB"


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".N", name)


def _group_regions(regions: Sequence[str]) -> list[list[Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for name in regions:
        found = re.findall(r"\.(\d+)(?=\.|$)", name)
        groups[_pattern(name)].append(int(found[0]) if found else -1)
    rows = []
    for pattern, indices in groups.items():
        idx = sorted(i for i in indices if i >= 0)
        shown = (f"{idx[0]}..{idx[-1]}" if idx and idx == list(range(idx[0], idx[-1] + 1))
                 and len(idx) > 1 else ", ".join(map(str, idx)) or "-")
        rows.append([pattern, len(indices), shown])
    return rows


def _explain(model, kwargs, cut, order: int, state_dtype: str):
    import ts_compile

    reports = ts_compile.explain(model, options={"cut": cut, "order": order,
                                                 "state_dtype": state_dtype,
                                                 "compiler": "eager"}, **kwargs)
    return reports


def run_explain(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    """Print the report; 0 when the pass applies, 1 when it does not (the reason is printed)."""
    out = stream if stream is not None else sys.stdout
    cut = _cut_value(args.cut)
    settings = _settings(cut, args)
    cls_name, config, size, what = _resolve(args)
    _check_device(args.device)
    began = time.perf_counter()
    model, kwargs = _build(cls_name, config, size, args.device)
    _print_header(model, cls_name, what, size, args.device, cut, settings, out)
    _print_passes(out)
    out.flush()

    cuts: list[str | tuple[str, ...]] = [cut] + [c for c in CUTS if c != cut]
    found = {c: _trace(model, kwargs, c, settings) for c in cuts}
    _print_blocks(found["block"], out)
    status = _print_reports(found[cut], cut, settings, args, out)
    _print_state_by_cut(found, cut, settings, out)
    print(f"({time.perf_counter() - began:.1f} s; python -m ts_compile explain --help for "
          "sizes, cuts, --all)", file=out)
    return status


def _settings(cut: str | tuple[str, ...], args: argparse.Namespace) -> TaylorSeerOptions:
    try:
        return TaylorSeerOptions(cut=cut, order=args.order, state_dtype=args.state_dtype)
    except OptionError as err:
        raise CliError(str(err).removeprefix("ts_compile: "),
                       "see `python -m ts_compile explain --help`") from None


def _check_device(device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        raise CliError(f"--device {device!r} is not a device",
                       "use meta (shapes only) or e.g. cpu, cuda") from None


def _build(cls_name: str, config: dict[str, Any], size, device: str):
    """The model and one call's keyword inputs."""
    from ..integrations.diffusers_inputs import ConfigError, build_model, example_inputs

    try:
        model = build_model(cls_name, config, device=device)
        return model, example_inputs(cls_name, model.config, size, device=device)
    except ConfigError as err:
        raise CliError(str(err), err.hint) from None


def _count(params: int) -> str:
    return (f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M" if params >= 1e5
            else f"{params / 1e3:.1f}K")


def _print_header(model, cls_name: str, what: str, size, device: str,
                  cut: str | tuple[str, ...], settings: TaylorSeerOptions, out: TextIO) -> None:
    from ..integrations.diffusers_inputs import tokens

    params = sum(p.numel() for p in model.parameters())
    frames = f", {size.frames} frames" if size.frames else ""
    print(f"{cls_name} ({what}; {_count(params)} parameters, device {device}"
          f"{': shapes only' if device == 'meta' else ''})", file=out)
    print(f"one call: {size.height}x{size.width}{frames}: {tokens(cls_name, model.config, size)} "
          f"image tokens, {size.text_tokens} text tokens, batch {size.batch}", file=out)
    print(f"cut={_label(cut)}, order {settings.order}, state_dtype {settings.state_dtype}: "
          f"state bytes = (order + 1) x numel x itemsize per live output", file=out)


def _print_passes(out: TextIO) -> None:
    """The passes `build_graphs` runs, in order, with the first line of their docstrings."""
    from ..passes import all_passes

    passes = all_passes()
    width = max(len(p.__name__) for p in passes)
    print("\npasses run (ts_compile.passes, in order):", file=out)
    for i, run in enumerate(passes, 1):
        summary = (run.__doc__ or "").strip().splitlines()[0]
        print(f"  {i}. {run.__name__:<{width}}  {summary}", file=out)


def _print_blocks(blocks, out: TextIO) -> None:
    from tabulate import tabulate

    print(f"\nblocks found (cut='block' regions): "
          f"{sum(len(r.regions) for r in blocks)}", file=out)
    print(tabulate([row for r in blocks for row in _group_regions(r.regions)],
                   headers=["module path", "count", "indices"], tablefmt="simple"), file=out)


def _print_reports(reports, cut: str | tuple[str, ...], settings: TaylorSeerOptions,
                   args: argparse.Namespace, out: TextIO) -> int:
    """One section per graph of the chosen cut; 1 when the pass does not apply to one."""
    status = 0
    for i, report in enumerate(reports):
        if len(reports) > 1:
            print(f"\n## graph {i + 1} of {len(reports)} (graph breaks split the model)",
                  file=out)
        if report.reason_not_applied:
            print(f"\nTaylorSeer does not apply with cut={_label(cut)}: "
                  f"{report.reason_not_applied}",
                  file=out)
            status = 1
            continue
        _print_report(report, cut, settings, args, out)
    return status


def _print_report(report, cut: str | tuple[str, ...], settings: TaylorSeerOptions,
                  args: argparse.Namespace, out: TextIO) -> None:
    from tabulate import tabulate

    if cut != "block":
        print(f"\nregions for cut={_label(cut)}: {len(report.regions)}", file=out)
        print(tabulate(_group_regions(report.regions),
                       headers=["module path", "count", "indices"], tablefmt="simple"),
              file=out)
    for name, why in report.skipped:
        print(f"skipped {name}: {why}", file=out)
    _print_live(report, settings, args.all, out)
    print("\nwhat each pass did:", file=out)
    for line in report.passes:
        print(f"  {line}", file=out)
    if args.graph:
        print("\nguarded graph:\n" + report.guarded_graph, file=out)


def _state_by_cut_row(c: str | tuple[str, ...], reports, chosen: bool) -> list[Any]:
    if any(r.reason_not_applied for r in reports):
        return [_label(c), "-", "-", "does not apply", ""]
    total = sum(r.state_bytes for r in reports)
    return [_label(c) + (" (chosen)" if chosen else ""),
            sum(len(r.regions) for r in reports), sum(len(r.live_outputs) for r in reports),
            f"{total:,}", fmt_bytes(total)]


def _print_state_by_cut(found: dict, cut: str | tuple[str, ...], settings: TaylorSeerOptions,
                        out: TextIO) -> None:
    from tabulate import tabulate

    rows = [_state_by_cut_row(c, reports, c == cut) for c, reports in found.items()]
    print(f"\nTaylor state by cut (order {settings.order}, {settings.state_dtype}):", file=out)
    print(tabulate(rows, headers=["cut", "regions", "live outputs", "state bytes", "size"],
                   tablefmt="simple", disable_numparse=True,
                   colalign=("left", "right", "right", "right", "right")), file=out)


def _trace(model, kwargs, cut, settings: TaylorSeerOptions):
    try:
        return _explain(model, kwargs, cut, settings.order, settings.state_dtype)
    except CliError:
        raise
    except Exception as err:  # noqa: BLE001 - a model the tracer cannot handle: one line
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CliError(f"tracing {type(model).__name__} with cut={_label(cut)} failed: "
                       f"{type(err).__name__}: {message}"[:400],
                       "rerun with --debug for the traceback; --device cpu traces with real "
                       "tensors if the meta device is the problem") from err


def _print_live(report, settings: TaylorSeerOptions, show_all: bool, out: TextIO) -> None:
    from tabulate import tabulate

    def table_bytes(shape) -> int:
        return state_bytes([shape], settings.order, settings.torch_state_dtype)

    live = report.live_outputs
    print(f"\nlive outputs carrying Taylor state: {len(live)}", file=out)
    if show_all or len(live) <= LIVE_ROWS:
        rows = [[region, index, "x".join(map(str, shape)) or "scalar",
                 str(dtype).removeprefix("torch."), f"{table_bytes(shape):,}"]
                for region, index, shape, dtype in live]
        headers = ["region", "output", "shape", "model dtype", "state bytes"]
    else:
        groups: dict[tuple, list] = {}
        for region, index, shape, dtype in live:
            key = (_pattern(region), index, tuple(shape), dtype)
            groups.setdefault(key, []).append(region)
        rows = [[pattern, index, "x".join(map(str, shape)) or "scalar",
                 str(dtype).removeprefix("torch."), len(names),
                 f"{len(names) * table_bytes(shape):,}"]
                for (pattern, index, shape, dtype), names in groups.items()]
        headers = ["region", "output", "shape", "model dtype", "count", "state bytes"]
    rows.append(["total", "", "", "", *([""] if len(headers) == 6 else []),
                 f"{report.state_bytes:,} ({fmt_bytes(report.state_bytes)})"])
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True), file=out)
