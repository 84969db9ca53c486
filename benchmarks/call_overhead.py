"""What each PyTorch lever does to a forecast step's cost: one fresh process per variant.

    python benchmarks/call_overhead.py                     # every variant, --size tiny (~5 min)
    python benchmarks/call_overhead.py --variants default,skip-module-guards --size cpu
    python benchmarks/call_overhead.py --count-guards     # the guards by kind, the module check
    python benchmarks/call_overhead.py --runtime-split 6 --repeats 10   # the runtime's cost, split

A forecast step is a call of the compiled model: Dynamo's frame entry and guard evaluation, the
arguments gathered (every parameter is a graph input), the runtime, then the forecast graph. The
method's floor is the same model with its block lists emptied (`benchmarks/speed.py`'s non-block
step). Each variant runs in its own process (Dynamo's caches and global config do not leak
between variants), compiles the taylorseer model (diffusers' schedule, 13 of 50 steps computed)
and the non-block model with the same settings, alternates them over --repeats generations, and
reports medians:

  forecast step      a forecast step through the compiled model (perf_counter around the call)
  graph alone        the compiled forecast graph called directly with one step's arguments
  whole call, stubs  the compiled model with both graphs replaced by stubs (Dynamo + runtime)
  non-block step     the floor model's step under the same variant
  ratio              forecast step / non-block step (goal <= 1.2 at --size tiny)
  graph in situ      the forecast graph timed inside forecast steps of --repeats more generations
                     (after a forecast step; right after a computed step in brackets): against
                     `graph alone`, what running between real steps costs the graph itself
  runtime in situ    the runtime's own work inside those steps (its call minus the graph)
  non-block graph / around it   the floor model's compiled graph timed inside its own steps,
                     and the rest of each such step (Dynamo around the graph), in --repeats more
                     generations of a second copy compiled alike (the timing wrapper stays off
                     the copy the ratio is measured on)

Variants (--variants, comma-separated):
  default              nothing changed
  ts-module-guards     guard_filter_fn=ts_compile.skip_module_guards (module tree checked once
                       per generation instead; the floor keeps its guards: a plain compile)
  skip-module-guards   guard_filter_fn=torch.compiler.skip_guard_on_all_nn_modules_unsafe
  keep-param-guards    skip nn-module guards except the parameters' tensor guards
  recursive-dict-tags  torch._dynamo.config.use_recursive_dict_tags_for_guards = True
  free-tensors         torch._dynamo.config.install_free_tensors = True
  no-size-asserts      Inductor size_asserts=False (the generated code's input checks)
  freezing             Inductor freezing=True (parameters folded as constants)
  skip-guard-eval      torch.compiler.set_stance(skip_guard_eval_unsafe=True) after warm-up
  cpp-wrapper          Inductor cpp_wrapper=True (the graphs' wrapper in C++, both models)
  state-bf16, order-0, order-1   the taylorseer model only: a bfloat16 state, order 0 or 1
                       instead of 2 (what reading the state costs a forecast step)
  heap-malloc          glibc malloc keeps large blocks on its heap (the child process's
                       environment: MALLOC_MMAP_THRESHOLD_ 32 MiB, the most glibc takes, and
                       trim threshold / top pad 1 GiB): by default every tensor over the dynamic
                       mmap threshold is mapped fresh (page faults on first touch) and unmapped
                       when freed, both models alike
  replayed-runtime     measurement only, the taylorseer model only: in the first timed
                       generations (the forecast step and ratio columns), each step calls the
                       graph the runtime called at that step of a recorded generation, with the
                       same state inputs, skipping the runtime (no placement, no state, no
                       scalar write: the outputs are not the model's). What the runtime costs a
                       forecast step between real steps: its own time, and what its touching
                       memory costs Dynamo and the graph around it
  minimal-runtime      measurement only, like replayed-runtime plus the reads and the write no
                       runtime can skip: the calling thread's lane, the latent's version counter
                       and the time input read on the host (what placing a call reads), and
                       the scalars the runtime wrote at that step of the recorded generation
                       copied into the state (as the runtime copies them). Against
                       replayed-runtime and the default: what those reads and writes cost in
                       situ, and what the runtime's decisions (placement, state lookup,
                       schedule, scalars lookup) cost on top: the most a faster runtime of the
                       same design could save
  ts-module-guards+no-size-asserts   a combination (any "+"-joined list works)

--runtime-split N: N processes, each alternating within every round a generation with the real
runtime, one with minimal-runtime and one with replayed-runtime (the first of them rotating), and
one of the non-block model, all under ts-module-guards+free-tensors. The three ways are then
compared within one process and the same minutes (across processes this machine's load moves the
ratio by more than the runtime costs); per process the medians, then the median ratio over them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

LEVERS = ("default", "ts-module-guards", "skip-module-guards", "keep-param-guards",
          "recursive-dict-tags",
          "free-tensors", "no-size-asserts", "freezing", "skip-guard-eval", "cpp-wrapper",
          "state-bf16", "order-0", "order-1", "heap-malloc", "replayed-runtime",
          "minimal-runtime")
# heap-malloc: read by glibc at process start, so set in the child's environment, not in-process
HEAP_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                   "MALLOC_TOP_PAD_": str(1 << 30)}
DEFAULT_VARIANTS = [*LEVERS, "ts-module-guards+no-size-asserts"]
STEPS = 50


def keep_parameter_guards(entries):
    """Skip the guards on nn-module attributes, keep the parameters' tensor guards (dtype, device,
    shape, strides) and everything outside the module tree."""
    return [not e.orig_guard.source.is_unspecialized_nn_module() or e.guard_type == "TENSOR_MATCH"
            for e in entries]


def _settings(levers: list[str]) -> dict[str, Any]:
    """The torch.compile options of both models (the taylorseer one adds its own); Dynamo config
    levers are set here, process-wide."""
    import ts_compile

    shared: dict[str, Any] = {}
    if "ts-module-guards" in levers:
        shared["guard_filter_fn"] = ts_compile.skip_module_guards
    if "skip-module-guards" in levers:
        shared["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
    if "keep-param-guards" in levers:
        shared["guard_filter_fn"] = keep_parameter_guards
    if "no-size-asserts" in levers:
        shared["size_asserts"] = False
    if "freezing" in levers:
        shared["freezing"] = True
    if "cpp-wrapper" in levers:
        shared["cpp_wrapper"] = True
    if "recursive-dict-tags" in levers:
        torch._dynamo.config.use_recursive_dict_tags_for_guards = True
    if "free-tensors" in levers:
        torch._dynamo.config.install_free_tensors = True
    return shared


def _build(levers: list[str], size: str, compiler: str) -> tuple:
    """(shared options, model, noise, inputs, the taylorseer model, the non-block model, the
    computed steps) under `levers`, compiled lazily (at their first call)."""
    import speed
    from ts_compile.options import TaylorSeerOptions
    from ts_compile.schedule import computed_steps

    shared = _settings(levers)
    schedule = speed.diffusers_schedule(STEPS, speed.DIFFUSERS_INTERVAL, speed.WARMUP)
    model, noise, inputs = speed.build_model(size)
    order = 0 if "order-0" in levers else 1 if "order-1" in levers else 2
    state_dtype = "bfloat16" if "state-bf16" in levers else "float32"
    compiled = torch.compile(model, backend="taylorseer", options={
        "schedule": schedule, "order": order, "state_dtype": state_dtype, "num_steps": STEPS,
        "compiler": compiler, **shared})
    floor = torch.compile(speed.non_block_model(model), backend=compiler,
                          options=dict(shared) or None)  # under the same variant
    computed = set(computed_steps(TaylorSeerOptions(schedule=schedule, num_steps=STEPS), STEPS))
    return shared, model, noise, inputs, compiled, floor, computed


def measure(variant: str, size: str, repeats: int, compiler: str) -> dict[str, Any]:
    import speed
    import ts_compile
    from ts_compile.api import controller_of

    levers = variant.split("+")
    shared, model, noise, inputs, compiled, floor, computed = _build(levers, size, compiler)
    forecast, non_block = [], []
    with torch.no_grad():
        speed.sample(compiled, noise, inputs, STEPS)  # compiles
        speed.sample(floor, noise, inputs, STEPS)
        runtime = controller_of(compiled).runtimes[0]
        in_situ = _InSitu(runtime)
        stance = None
        if "skip-guard-eval" in levers:
            stance = torch.compiler.set_stance(skip_guard_eval_unsafe=True)
        replay = (_Replayed(compiled, runtime, noise, inputs) if "replayed-runtime" in levers
                  else _Minimal(compiled, runtime, noise, inputs) if "minimal-runtime" in levers
                  else None)
        try:
            for _ in range(repeats):
                ts_compile.reset(compiled)
                times: list[float] = []
                if replay is None:
                    speed.sample(compiled, noise, inputs, STEPS, times)
                else:
                    with replay:
                        speed.sample(compiled, noise, inputs, STEPS, times)
                forecast += [t for k, t in enumerate(times) if k not in computed]
                times = []
                speed.sample(floor, noise, inputs, STEPS, times)
                non_block += times
            for _ in range(repeats):  # apart: the wrappers must not slow the timed steps
                ts_compile.reset(compiled)
                with in_situ:
                    speed.sample(compiled, noise, inputs, STEPS)
        finally:
            if stance is not None:
                torch.compiler.set_stance("default")
        # The floor's graph inside its own steps: a second non-block model whose compiled graph
        # is timed (a wrapper on the timed model only, so the ratio above is not touched).
        floor_graph = _TimedCompiler(compiler)
        floor_timed = torch.compile(speed.non_block_model(model), backend=floor_graph,
                                    options=dict(shared) or None)
        speed.sample(floor_timed, noise, inputs, STEPS)  # compiles
        floor_graph.times.clear()
        floor_steps: list[float] = []
        for _ in range(repeats):
            speed.sample(floor_timed, noise, inputs, STEPS, floor_steps)
        assert len(floor_steps) == len(floor_graph.times), "one graph call per step expected"
        floor_around = [t - g for t, g in zip(floor_steps, floor_graph.times)]
        graph_alone = _graph_alone(compiled, runtime, noise, inputs)
        row = speed.Row("ts", "", compiled, sorted(computed), compiled=True, kind="ts",
                        reset=lambda: ts_compile.reset(compiled))
        whole_call = speed.whole_call_overhead(row, noise, inputs, STEPS, 2000)
        recompiles = ts_compile.stats(compiled)["recompiles"]
    f, n = statistics.median(forecast), statistics.median(non_block)
    after_forecast, after_computed, runtime_own = in_situ.medians(computed)
    return dict(variant=variant, forecast_us=f * 1e6, graph_us=graph_alone * 1e6,
                graph_in_situ_us=after_forecast * 1e6, graph_after_computed_us=after_computed * 1e6,
                runtime_us=runtime_own * 1e6,
                non_block_graph_in_situ_us=statistics.median(floor_graph.times) * 1e6,
                non_block_around_us=statistics.median(floor_around) * 1e6,
                whole_call_us=whole_call * 1e6, non_block_us=n * 1e6, ratio=f / n,
                recompiles=recompiles, load=os.getloadavg()[0])


SPLIT_WAYS = ("runtime", "minimal", "replayed")


def runtime_split(size: str, repeats: int, compiler: str) -> dict[str, Any]:
    """--runtime-split, one process: under ts-module-guards+free-tensors, each round runs a
    generation with the real runtime, one with `minimal-runtime`, one with `replayed-runtime`
    (rotating which goes first) and one of the non-block model, so that all three are timed in
    the same process and the same minutes; medians of the forecast steps and of the non-block
    steps."""
    import speed
    import ts_compile
    from ts_compile.api import controller_of

    _, _, noise, inputs, compiled, floor, computed = _build(
        ["ts-module-guards", "free-tensors"], size, compiler)
    forecast: dict[str, list[float]] = {way: [] for way in SPLIT_WAYS}
    non_block: list[float] = []
    with torch.no_grad():
        speed.sample(compiled, noise, inputs, STEPS)  # compiles
        speed.sample(floor, noise, inputs, STEPS)
        runtime = controller_of(compiled).runtimes[0]
        swaps = {"runtime": contextlib.nullcontext(),
                 "minimal": _Minimal(compiled, runtime, noise, inputs),
                 "replayed": _Replayed(compiled, runtime, noise, inputs)}
        for round_ in range(repeats):
            first = round_ % len(SPLIT_WAYS)
            for way in SPLIT_WAYS[first:] + SPLIT_WAYS[:first]:
                ts_compile.reset(compiled)
                times: list[float] = []
                with swaps[way]:
                    speed.sample(compiled, noise, inputs, STEPS, times)
                forecast[way] += [t for k, t in enumerate(times) if k not in computed]
            times = []
            speed.sample(floor, noise, inputs, STEPS, times)
            non_block += times
        ts_compile.reset(compiled)
    n = statistics.median(non_block)
    return dict({f"{way}_us": statistics.median(forecast[way]) * 1e6 for way in SPLIT_WAYS},
                non_block_us=n * 1e6, load=os.getloadavg()[0])


class _InSitu:
    """Inside timed generations: on each forecast step, the forecast graph's time and the
    runtime's own work around it (`GraphRuntime.__call__` minus the graph), with the runtime's
    `forecast_fn` and `GraphRuntime.__call__` wrapped while the `with` block runs."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.steps: list[tuple[int, float, float]] = []  # (step, graph, runtime's own work)

    def __enter__(self):
        from ts_compile.runtime import GraphRuntime

        kept_fn, kept_call = self.runtime.forecast_fn, GraphRuntime.__call__
        graph = []
        self.step = 0

        def forecast_fn(*args):
            t0 = time.perf_counter()
            out = kept_fn(*args)
            graph.append(time.perf_counter() - t0)
            return out

        def call(runtime, *args):
            graph.clear()
            t0 = time.perf_counter()
            out = kept_call(runtime, *args)
            took = time.perf_counter() - t0
            if graph:
                self.steps.append((self.step % STEPS, graph[0], took - graph[0]))
            self.step += 1
            return out

        self.runtime.forecast_fn, GraphRuntime.__call__ = forecast_fn, call
        self._kept = kept_fn, kept_call
        return self

    def __exit__(self, *exc) -> None:
        from ts_compile.runtime import GraphRuntime

        self.runtime.forecast_fn, GraphRuntime.__call__ = self._kept

    def medians(self, computed: set[int]) -> tuple[float, float, float]:
        """(graph after a forecast step, graph right after a computed step, the runtime's own
        work on a forecast step)."""
        median = statistics.median
        return (median(g for k, g, _ in self.steps if k - 1 not in computed),
                median(g for k, g, _ in self.steps if k - 1 in computed),
                median(r for _, _, r in self.steps))


class _Replayed:
    """Measurement only (lever `replayed-runtime`): while the `with` block runs, every step of
    `runtime` skips it and calls the graph it called at the same step of one recorded generation
    (the compute graph at computed steps, the forecast graph at the others) with the same state
    inputs; the scalars then hold whatever was written last, so the outputs are not the
    model's, but each graph runs where it ran. One model call is one runtime call here (no graph
    breaks), so a counter is the step."""

    def __init__(self, compiled, runtime, noise, inputs) -> None:
        import speed
        import ts_compile
        from ts_compile.runtime import GraphRuntime
        from ts_compile.taylor import host_scalars_length

        self.runtime, self.real = runtime, GraphRuntime.__call__
        self.calls: list[tuple] = []  # per step: (graph, what followed the user inputs)
        self.written: list[list[float]] = []  # per step: the scalars the runtime wrote
        host_length = host_scalars_length(runtime.options.order)
        graphs = runtime.compute_fn, runtime.forecast_fn
        users: list[tuple] = []

        def recording(graph):
            def call(*args):
                extra = args[len(users[-1]):]
                self.calls.append((graph, extra))
                self.written.append(extra[-1][:host_length].tolist())  # the scalars, as written
                return graph(*args)
            return call

        def counting(rt, *args):
            users.append(args)
            return self.real(rt, *args)

        runtime.compute_fn, runtime.forecast_fn = map(recording, graphs)
        GraphRuntime.__call__ = counting
        try:
            ts_compile.reset(compiled)
            speed.sample(compiled, noise, inputs, STEPS)
        finally:
            (runtime.compute_fn, runtime.forecast_fn), GraphRuntime.__call__ = graphs, self.real
        assert len(self.calls) == STEPS, "one graph call per step expected"
        self.step = 0

    def __enter__(self):
        from ts_compile.runtime import GraphRuntime

        calls, real, ours = self.calls, self.real, self.runtime
        self.step = 0

        def call(rt, *args):
            if rt is not ours:
                return real(rt, *args)
            (graph, extra), self.step = calls[self.step], (self.step + 1) % STEPS
            return graph(*args, *extra)

        GraphRuntime.__call__ = call
        return self

    def __exit__(self, *exc) -> None:
        from ts_compile.runtime import GraphRuntime

        GraphRuntime.__call__ = self.real


class _Minimal(_Replayed):
    """Measurement only (lever `minimal-runtime`): `_Replayed`, plus at each step what no runtime
    can skip: the calling thread's lane (as the runtime finds it), the latent's version counter
    and the time input read on the host (what placing a call reads; a call identical to the
    previous one is refused), and the scalars the runtime wrote at that step of the recorded
    generation copied into the state's scalars (a float32 array into a NumPy view: the
    runtime's CPU write). No decision: placement, the state lookup, the schedule and the scalars
    lookup are what `_Replayed` against this one leaves out."""

    def __init__(self, compiled, runtime, noise, inputs) -> None:
        import array

        super().__init__(compiled, runtime, noise, inputs)
        if runtime.latent_index is None or runtime.clock_index is None:
            raise ValueError("minimal-runtime needs a graph with latent and time inputs")
        scalars = self.calls[0][1][-1]
        self.view = memoryview(scalars[:len(self.written[0])].numpy())
        self.values = [array.array("f", values) for values in self.written]

    def __enter__(self):
        from ts_compile.lane import current
        from ts_compile.runtime import GraphRuntime
        from ts_compile.stepping import host_time

        calls, values, view = self.calls, self.values, self.view
        real, ours = self.real, self.runtime
        latent_index, clock_index = ours.latent_index, ours.clock_index
        self.step, self.seen = 0, None

        def call(rt, *args):
            if rt is not ours:
                return real(rt, *args)
            lane = getattr(current, "lane", None)
            if lane is None or not lane.in_call:
                raise RuntimeError("minimal-runtime: a call outside a model call")
            seen = args[latent_index]._version, host_time(args[clock_index])
            if seen == self.seen:
                raise RuntimeError("minimal-runtime: the same call twice")
            step, self.seen = self.step, seen
            view[:] = values[step]
            (graph, extra), self.step = calls[step], (step + 1) % STEPS
            return graph(*args, *extra)

        GraphRuntime.__call__ = call
        return self


class _TimedCompiler:
    """A Dynamo backend: `compiler` (Inductor with the call's options as its config, or eager),
    with every call of the compiled graph timed into `times`."""

    def __init__(self, compiler: str) -> None:
        self.compiler = compiler
        self.times: list[float] = []

    def __call__(self, gm, example_inputs, options=None, mode=None):
        fn = gm
        if self.compiler == "inductor":
            from torch._inductor.compile_fx import compile_fx

            fn = compile_fx(gm, example_inputs, config_patches=dict(options or {}))
        times = self.times

        def timed(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            times.append(time.perf_counter() - t0)
            return out

        return timed


def _graph_alone(compiled, runtime, noise, inputs) -> float:
    import speed
    import ts_compile

    captured = {}
    kept = runtime.forecast_fn

    def capture(*args):
        captured.setdefault("args", args)
        return kept(*args)

    runtime.forecast_fn = capture
    try:
        ts_compile.reset(compiled)
        speed.sample(compiled, noise, inputs, 10)
    finally:
        runtime.forecast_fn = kept
    args = captured["args"]
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        kept(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_guards(size: str) -> None:
    """Dynamo's guards on the benchmark model by kind (on the module tree or not), and what
    `skip_module_guards`' per-generation module check costs on it."""
    from collections import Counter

    import speed
    from ts_compile._compat import compile_isolated
    from ts_compile.module_guards import ModuleSnapshot

    model, noise, inputs = speed.build_model(size)
    kinds: Counter = Counter()

    def counting(entries):
        for e in entries:
            kinds[e.guard_type, e.orig_guard.source.is_unspecialized_nn_module()] += 1
        return [True] * len(entries)

    with torch.no_grad():
        torch.compile(model, backend="eager", options={"guard_filter_fn": counting})(
            **inputs(noise, 0.5))
    on_tree = sum(n for (_, tree), n in kinds.items() if tree)
    print(f"{sum(kinds.values())} guards, {on_tree} on the module tree; by kind (module tree): "
          + ", ".join(f"{kind} {n}" for (kind, tree), n in kinds.most_common() if tree))
    snapshot = ModuleSnapshot(model)
    t0 = time.perf_counter()
    for _ in range(20):
        assert not snapshot.changes(model)
    print(f"skip_module_guards' module check: {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms per "
          f"generation ({len(snapshot.modules)} modules)")
    # Where it runs: at a generation's first step, after other work has left the module tree's
    # objects out of the caches. A full step of plain Inductor before each check stands for it.
    full = compile_isolated(model, backend="inductor")
    spent = 0.0
    with torch.no_grad():
        full(**inputs(noise, 0.5))  # compiles
        for _ in range(20):
            full(**inputs(noise, 0.5))
            t0 = time.perf_counter()
            assert not snapshot.changes(model)
            spent += time.perf_counter() - t0
    print(f"the same check right after a full step (plain Inductor): {spent / 20 * 1e3:.2f} ms")
    # A write that changes nothing the graph reads (an equal value, another object): the
    # fingerprint differs, so the facts are compared in full once, and the fingerprint retaken.
    spent = 0.0
    for _ in range(20):
        vars(model)["_ts_probe"] = None  # the root's dict written twice, ending as it was
        del vars(model)["_ts_probe"]
        t0 = time.perf_counter()
        assert not snapshot.changes(model)
        spent += time.perf_counter() - t0
    print(f"a full comparison (a write that changes nothing, then the fingerprint retaken): "
          f"{spent / 20 * 1e3:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated; each a '+'-joined list of: " + ", ".join(LEVERS))
    parser.add_argument("--size", default="tiny", help="tiny or cpu (benchmarks/speed.py sizes)")
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per model (5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--compiler", default="inductor", choices=("inductor", "eager"),
                        help="inner compiler of both models (eager: for the tests)")
    parser.add_argument("--count-guards", action="store_true",
                        help="print Dynamo's guards on the model by kind, and the cost of "
                             "skip_module_guards' per-generation check, then exit")
    parser.add_argument("--runtime-split", type=int, default=0, metavar="N",
                        help="N processes, each timing forecast steps with the real runtime, "
                             "minimal-runtime and replayed-runtime alternated in one process "
                             "(ts-module-guards+free-tensors), then exit")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--one-split", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = sorted({lever for v in variants for lever in v.split("+")} - set(LEVERS))
    if bad:
        parser.error(f"unknown lever(s) {', '.join(bad)}; levers are {', '.join(LEVERS)}")
    torch.set_num_threads(args.threads)
    if args.count_guards:
        count_guards(args.size)
        return 0
    if args.one is not None:
        print("RESULT " + json.dumps(measure(args.one, args.size, args.repeats, args.compiler)))
        return 0
    if args.one_split:
        print("RESULT " + json.dumps(runtime_split(args.size, args.repeats, args.compiler)))
        return 0
    from tabulate import tabulate

    cache = tempfile.mkdtemp(prefix="ts_overhead_inductor_")  # one cache: compiles once per graph
    print(f"torch {torch.__version__}, --size {args.size}, --compiler {args.compiler}, "
          f"{args.threads} thread(s), "
          f"{args.repeats} generations of {STEPS} steps per model, diffusers' schedule (13/50); "
          f"load average before {os.getloadavg()[0]:.2f}")

    def child(flags: list[str], variant: str = "") -> dict[str, Any] | str:
        """Run one measuring process; its result, or why it failed."""
        cmd = [sys.executable, os.path.abspath(__file__), *flags, "--size", args.size,
               "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--compiler", args.compiler]
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        if "heap-malloc" in variant.split("+"):
            env.update(HEAP_MALLOC_ENV)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            return "failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return json.loads(line[len("RESULT "):])

    if args.runtime_split:
        return print_runtime_split([child(["--one-split"]) for _ in range(args.runtime_split)])
    rows = []
    for variant in variants:
        r = child(["--one", variant], variant)
        if isinstance(r, str):
            rows.append([variant, r, "", "", "", "", "", "", "", "", ""])
            continue
        rows.append([variant, f"{r['forecast_us']:.0f}", f"{r['graph_us']:.0f}",
                     f"{r['graph_in_situ_us']:.0f} ({r['graph_after_computed_us']:.0f})",
                     f"{r['runtime_us']:.0f}",
                     f"{r['non_block_graph_in_situ_us']:.0f} / {r['non_block_around_us']:.0f}",
                     f"{r['whole_call_us']:.0f}", f"{r['non_block_us']:.0f}", f"{r['ratio']:.2f}",
                     r["recompiles"], f"{r['load']:.1f}"])
        print(f"  {variant}: done", flush=True)
    print(tabulate(rows, headers=["variant", "forecast step us", "graph alone us",
                                  "graph in situ us", "runtime in situ us",
                                  "non-block graph / around it us",
                                  "whole call, stubs us", "non-block step us",
                                  "forecast / non-block", "recompiles", "load after"],
                   tablefmt="github", disable_numparse=True))
    return 0


def print_runtime_split(results: list[dict[str, Any] | str]) -> int:
    """The --runtime-split table: one row per process, then the medians over the processes."""
    from tabulate import tabulate

    rows, ratios = [], {way: [] for way in SPLIT_WAYS}
    for run, r in enumerate(results, 1):
        if isinstance(r, str):
            rows.append([run, r, "", "", ""])
            continue
        for way in SPLIT_WAYS:
            ratios[way].append(r[f"{way}_us"] / r["non_block_us"])
        rows.append([run, " / ".join(f"{r[f'{way}_us']:.0f}" for way in SPLIT_WAYS),
                     f"{r['non_block_us']:.0f}",
                     " / ".join(f"{ratios[way][-1]:.2f}" for way in SPLIT_WAYS),
                     f"{r['load']:.1f}"])
    if all(ratios.values()):
        rows.append(["median", "", "", " / ".join(
            f"{statistics.median(ratios[way]):.2f}" for way in SPLIT_WAYS), ""])
    print(tabulate(rows, headers=["run", "forecast step us: " + " / ".join(SPLIT_WAYS),
                                  "non-block step us",
                                  "forecast / non-block: " + " / ".join(SPLIT_WAYS),
                                  "load after"], tablefmt="github", disable_numparse=True))
    return 0 if all(ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
