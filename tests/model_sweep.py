"""The every-transformer sweep: one zoo class through plain torch.compile and the backend.

``sweep_one(name)`` builds the class from ``tests/model_zoo.py`` and, with grad off and fixed
seeds, records in a ``SweepResult``:

- plain ``torch.compile(backend="eager", fullgraph=True)``: whether Dynamo takes the model in one
  graph (else the reason, then a retry with ``fullgraph=False``), and how far its output is from
  the uncompiled model along the trajectory below (Dynamo's own difference, 0 when exact);
- ``backend="taylorseer"`` (eager inner compiler, interval 3, warm-up 1, order 2: steps 0, 3, 6
  and 9 computed) on a 12-step teacher-forced loop: every step gets the inputs of the EAGER
  trajectory (latent moved by an Euler step with the eager output, time falling linearly from its
  initial value), and each step's output is compared with the eager output at the same inputs:
  steps the backend computed must match, forecast steps get their relative error recorded;
- ``ts_compile.stats``: graphs, regions, live outputs, computed/forecast steps, fallbacks and
  skipped regions with their reasons;
- reset determinism: ``ts_compile.reset`` and the same 12 steps again, bitwise equal;
- an all-compute schedule (every step computed) against eager at every step.

Errors are relative: ``max |out - eager| / max |eager|`` over every tensor of the output.
Nothing a model does may crash the sweep: every failure is a status with its reason.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch

import ts_compile

from .model_zoo import ZOO, ZooEntry, block_lists, build

STEPS = 12
OPTIONS = {"compiler": "eager", "interval": 3, "warmup": 1, "order": 2}
# A computed step must equal the model exactly: with the eager inner compiler the rewritten graphs
# run the very ops Dynamo traced, in the same order (every class that is right measures 0; plain
# Dynamo measures 0 on every class too). An inner compiler that reorders float ops would need a
# bound of about 1e-6 relative here.
REL_TOL = 0.0

EXACT_FORECASTING = "exact+forecasting"
EXACT_FALLBACK = "exact, fallback"
EXACT_OTHER_REGIONS = "exact, regions not the blocks"  # forecasting, but not (only) the blocks
WRONG = "WRONG"
CRASH = "crash"
PLAIN_FAILS = "plain compile fails"


@dataclasses.dataclass
class SweepResult:
    name: str
    kind: str
    blocks: dict[str, int]              # top-level module lists of our config and their lengths
    test_blocks: dict[str, int]         # block counts of diffusers' test config
    status: str = ""
    reason: str = ""
    plain_fullgraph: bool | None = None  # None: plain compile failed with fullgraph=False too
    plain_break: str = ""               # why fullgraph=True failed
    plain_rel: float | None = None      # plain compile vs eager, worst step
    graphs: int = 0
    regions: list[str] = dataclasses.field(default_factory=list)
    live_outputs: int = 0
    computed_steps: int = 0
    forecast_steps: int = 0
    fallbacks: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # Against the model's own declaration of its blocks (diffusers' `_repeated_blocks`, when the
    # class has one): regions that are not such a block, and top-level blocks that are no region.
    declared_blocks: list[str] = dataclasses.field(default_factory=list)
    other_regions: list[str] = dataclasses.field(default_factory=list)
    blocks_not_regions: list[str] = dataclasses.field(default_factory=list)
    computed_rel: float | None = None   # worst computed (or plain-fallback) step vs eager
    computed_abs: float | None = None
    step0_rel: float | None = None
    wrong_steps: list[int] = dataclasses.field(default_factory=list)
    forecast_rel: list[float] = dataclasses.field(default_factory=list)
    reset_identical: bool | None = None
    all_compute_rel: float | None = None
    error: str = ""                     # the exception that stopped the backend run
    trace: str = ""                     # its last frames
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------
# Trees of call arguments and outputs
# ------------------------------------------------------------------------------------------------

def _map(tree: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        mapped = [_map(v, fn) for v in tree]
        return tuple(mapped) if isinstance(tree, tuple) else mapped
    return tree  # python values and stateful objects (KV caches) are passed as they are


def _tensors(tree: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map(tree, found.append)
    return found


def _clone(tree: Any) -> Any:
    """A private copy per call: a model that writes into its inputs must not change the next."""
    return _map(tree, lambda t: t.clone())


def _keep(out: Any) -> Any:
    return _map(out, lambda t: t.detach().clone())


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|; equal values (infinities, NaN against NaN) count as 0, any other NaN as inf."""
    if a.numel() == 0:
        return 0.0
    if (a.isnan() ^ b.isnan()).any():
        return float("inf")
    same = (a == b) | (a.isnan() & b.isnan())
    diff = float((a.double() - b.double()).abs().masked_fill(same, 0).max())
    return diff if diff == diff else float("inf")


def _errors(out: Any, ref: Any) -> tuple[float, float]:
    """(max abs, relative) difference over every tensor of two outputs of the same structure."""
    got, want = _tensors(out), _tensors(ref)
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        return float("inf"), float("inf")
    diff = max((_diff(a, b) for a, b in zip(got, want)), default=0.0)
    if diff == 0.0:
        return 0.0, 0.0
    scale = max((float(b.double().nan_to_num().abs().max()) for b in want if b.numel()),
                default=0.0)
    return diff, diff / scale if scale > 0 else float("inf")


def _identical(a: Any, b: Any) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y)
                                      for x, y in zip(ta, tb))


# ------------------------------------------------------------------------------------------------
# The teacher-forced trajectory
# ------------------------------------------------------------------------------------------------

def _sample(out: Any, index: int) -> Any:
    return out[index] if isinstance(out, (tuple, list)) else out


def _euler(latent: Any, velocity: Any, to_latent) -> Any:
    """latent - velocity / STEPS on the latent's part of the output (a leading sub-box)."""
    if isinstance(latent, (list, tuple)):
        return type(latent)(_euler(x, v, to_latent) for x, v in zip(latent, velocity))
    if to_latent is not None:
        velocity = to_latent(velocity)
    if velocity.dim() != latent.dim():
        raise ValueError(f"output {tuple(velocity.shape)} does not fit latent "
                         f"{tuple(latent.shape)}")
    box = tuple(slice(0, min(a, b)) for a, b in zip(latent.shape, velocity.shape))
    moved = latent.clone()
    moved[box] -= velocity[box].to(latent.dtype) / STEPS
    return moved


def _at_time(t0: torch.Tensor, step: int) -> torch.Tensor:
    """The time input at `step`: falling linearly from its initial value (integer times rounded)."""
    value = t0.double() * (1.0 - step / STEPS)
    return value.round().to(t0.dtype) if not t0.is_floating_point() else value.to(t0.dtype)


def eager_trajectory(entry: ZooEntry, model: torch.nn.Module, kwargs0: dict[str, Any]):
    """The inputs of each step and the uncompiled model's outputs on them."""
    inputs, outputs = [], []
    kwargs = dict(kwargs0)
    times = {name: kwargs0[name] for name in (entry.time, *entry.extra_times) if name}
    latents = {entry.latent: 0, **entry.extra_latents}
    for step in range(STEPS):
        for name, t0 in times.items():
            kwargs[name] = _at_time(t0, step)
        inputs.append(dict(kwargs))
        out = _keep(model(**_clone(kwargs), return_dict=False))
        outputs.append(out)
        for arg, index in latents.items():
            to_latent = entry.to_latent if arg == entry.latent else None
            kwargs[arg] = _euler(kwargs[arg], _sample(out, index), to_latent)
    return inputs, outputs


def _run(fn, inputs: list[dict[str, Any]]) -> list[Any]:
    return [_keep(fn(**_clone(kwargs), return_dict=False)) for kwargs in inputs]


def _first_line(err: BaseException) -> str:
    inner = getattr(err, "inner_exception", None)  # BackendCompilerFailed wraps the backend's error
    if inner is not None:
        return f"{type(err).__name__} from {_first_line(inner)}"[:300]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _break_reason(err: BaseException) -> str:
    """The graph-break reason of a fullgraph=True failure (Dynamo's "Explanation" line if any)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for key in ("Explanation:", "Hint:"):
        for line in lines:
            if line.startswith(key):
                head = lines[0]
                return f"{type(err).__name__}: {head} / {line}"[:300]
    return _first_line(err)


# ------------------------------------------------------------------------------------------------
# One class
# ------------------------------------------------------------------------------------------------

def _plain(result: SweepResult, model, inputs, eager_out) -> bool | None:
    """Plain Dynamo with the eager backend; True/False: which fullgraph worked, None: neither."""
    for fullgraph in (True, False):
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, backend="eager", fullgraph=fullgraph)
            outs = _run(compiled, inputs)
        except Exception as err:  # noqa: BLE001 - any failure is a finding, not a sweep crash
            if fullgraph:
                result.plain_break = _break_reason(err)
                continue
            result.reason = f"plain compile (fullgraph=False) fails: {_first_line(err)}"
            return None
        result.plain_rel = max(_errors(o, e)[1] for o, e in zip(outs, eager_out))
        return fullgraph
    return None


def _taylorseer(result: SweepResult, model, inputs, eager_out, fullgraph: bool) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="taylorseer", options=OPTIONS, fullgraph=fullgraph)
    first, kinds = [], []
    try:
        for kwargs in inputs:
            before = ts_compile.stats(compiled)
            first.append(_keep(compiled(**_clone(kwargs), return_dict=False)))
            after = ts_compile.stats(compiled)
            forecast = after["forecast_steps"] > before["forecast_steps"]
            kinds.append("forecast" if forecast else "computed")
    finally:  # what the backend found, also when a step raised
        stats = ts_compile.stats(compiled)
        result.graphs, result.regions = stats["graphs"], stats["regions"]
        result.live_outputs = stats["live_outputs"]
        result.computed_steps = stats["computed_steps"]
        result.forecast_steps = stats["forecast_steps"]
        result.fallbacks = list(stats["fallbacks"])
        result.skipped = list(stats["skipped_regions"])

    computed = []
    for step, (out, ref, kind) in enumerate(zip(first, eager_out, kinds)):
        diff, rel = _errors(out, ref)
        if kind == "forecast":
            result.forecast_rel.append(rel)
            continue
        computed.append((diff, rel))
        if rel > REL_TOL:
            result.wrong_steps.append(step)
        if step == 0:
            result.step0_rel = rel
    result.computed_abs = max(d for d, _ in computed)
    result.computed_rel = max(r for _, r in computed)

    ts_compile.reset(compiled)
    second = _run(compiled, inputs)
    result.reset_identical = all(_identical(a, b) for a, b in zip(first, second))


def _all_compute(result: SweepResult, model, inputs, eager_out, fullgraph: bool) -> None:
    torch._dynamo.reset()
    options = {**OPTIONS, "schedule": range(STEPS)}
    compiled = torch.compile(model, backend="taylorseer", options=options, fullgraph=fullgraph)
    outs = _run(compiled, inputs)
    result.all_compute_rel = max(_errors(o, e)[1] for o, e in zip(outs, eager_out))


def _check_regions(result: SweepResult, model: torch.nn.Module) -> None:
    """Compare the regions found with the block classes the model declares (if it does)."""
    declared = list(getattr(model, "_repeated_blocks", None) or [])
    result.declared_blocks = declared
    if not declared:
        return
    regions = set()
    for name in {name.split("@")[0] for name in result.regions}:
        # "blocks.*" / "blocks.*.ff": a frame of every block (or of a part of each) that Dynamo
        # compiled on its own after a graph break in the model's loop.
        if ".*" in name:
            stack, _, inner = name.partition(".*")
            regions.update(f"{stack}.{i}{inner}" for i in range(len(model.get_submodule(stack))))
        else:
            regions.add(name)
    for name in sorted(regions):
        try:
            cls = type(model.get_submodule(name)).__name__
        except AttributeError:  # a region name that is no module path (e.g. a custom cut)
            cls = "?"
        if cls not in declared and not any(name.startswith(f"{other}.") for other in regions):
            result.other_regions.append(f"{name} ({cls})")
    for list_name in block_lists(model):
        for i, block in enumerate(model.get_submodule(list_name)):
            path = f"{list_name}.{i}"
            covered = path in regions or any(r.startswith(f"{path}.") for r in regions)
            if type(block).__name__ in declared and not covered:
                result.blocks_not_regions.append(path)


def _classify(result: SweepResult) -> None:
    """Set status and reason from the measurements (also re-run on stored results)."""
    if result.plain_fullgraph is None:
        result.status = PLAIN_FAILS
        return
    if result.error:
        result.status, result.reason = CRASH, result.error
        return
    wrong = []
    if result.wrong_steps:
        step0 = "-" if result.step0_rel is None else f"{result.step0_rel:.1e}"
        wrong.append(f"computed step(s) {result.wrong_steps} differ from eager "
                     f"(step 0 rel {step0}, worst {result.computed_rel:.1e})")
    if result.all_compute_rel is not None and result.all_compute_rel > REL_TOL:
        wrong.append(f"all-compute schedule rel {result.all_compute_rel:.1e}")
    if result.reset_identical is False:
        wrong.append("a second generation after reset differs")
    skipped = [f"skipped {n}: {why}" for n, why in result.skipped]
    if wrong:
        result.status, result.reason = WRONG, "; ".join(wrong)
    elif result.forecast_steps > 0:
        notes = _region_notes(result)
        result.status = EXACT_OTHER_REGIONS if notes else EXACT_FORECASTING
        result.reason = "; ".join(notes + skipped)
    else:
        result.status = EXACT_FALLBACK
        reasons = list(result.fallbacks) + skipped
        result.reason = "; ".join(reasons or ["no forecast step and no reason given"])


def _region_notes(result: SweepResult) -> list[str]:
    notes = []
    if result.other_regions:
        notes.append(f"regions that are not the declared blocks: {', '.join(result.other_regions)}")
    if result.blocks_not_regions:
        notes.append(f"declared blocks always computed: {', '.join(result.blocks_not_regions)}")
    return notes


def sweep_one(name: str, seed: int = 0) -> SweepResult:
    """Run the sweep on the zoo class `name`; nothing the model or the backend does raises."""
    start = time.perf_counter()
    entry = ZOO[name]
    model = build(entry, seed)
    result = SweepResult(name, entry.kind, block_lists(model), dict(entry.test_blocks))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backend's fallback warnings land in stats()
        inputs, eager_out = eager_trajectory(entry, model, entry.inputs(
            model, torch.Generator().manual_seed(seed + 1)))
        result.plain_fullgraph = _plain(result, model, inputs, eager_out)
        if result.plain_fullgraph is not None:
            for run, what in ((_taylorseer, "forecasting run"), (_all_compute, "all-compute run")):
                try:
                    run(result, model, inputs, eager_out, result.plain_fullgraph)
                except Exception as err:  # noqa: BLE001 - a crash is a status, with its exception
                    result.error = result.error or f"{what}: {_first_line(err)}"
                    result.trace = result.trace or traceback.format_exc(limit=-6)
    torch._dynamo.reset()
    _check_regions(result, model)
    _classify(result)
    result.seconds = time.perf_counter() - start
    return result
