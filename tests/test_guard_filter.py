"""The taylorseer backend under torch's nn-module guard filter (docs/performance.md, "Call overhead").

`options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe, ...}` drops
Dynamo's guards whose source is inside the module tree: most of a forecast step's cost at small
sizes. What stays guarded, and so still recompiles: the user inputs (shape, dtype, strides), the
grad mode, globals. What is then not seen: edits of module attributes after compiling (the
documented price, pinned below so that a torch change shows up here).
"""

import pytest
import torch

import ts_compile

from .conftest import compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SPEC = ModelSpec(width=8, lists=(2, 2), pre_op=True, post_op=True, seed=5)
SKIP_MODULE_GUARDS = torch.compiler.skip_guard_on_all_nn_modules_unsafe


def _generation(compiled, reference, x, steps=8):
    with torch.no_grad():
        for step in range(steps):
            t = torch.full((x.shape[0],), 1.0 - step / steps, dtype=x.dtype)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"step {step}: {m}")
    ts_compile.reset(compiled)
    reference.reset()


def test_forecasts_equal_the_reference_under_the_filter():
    model = build_model(SPEC)
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=SKIP_MODULE_GUARDS)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3))
    _generation(compiled, reference, make_inputs(SPEC))
    stats = ts_compile.stats(compiled)
    assert stats["forecast_steps"] > 0 and not stats["fallbacks"]


@pytest.mark.parametrize("change", ["shape", "dtype", "strides"])
@pytest.mark.parametrize("guard_filter", ["torch's", "ours"])
def test_changed_inputs_still_recompile_under_the_filter(change, guard_filter):
    model = build_model(SPEC)
    guard_filter_fn = (SKIP_MODULE_GUARDS if guard_filter == "torch's"
                       else ts_compile.skip_module_guards)
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=guard_filter_fn)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3))
    x = make_inputs(SPEC)
    _generation(compiled, reference, x)
    if change == "shape":
        x = make_inputs(SPEC, batch=3, tokens=5)
    elif change == "dtype":
        model.double()
        x = x.double()
    else:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # same shape, other strides
        assert x.stride() != make_inputs(SPEC).stride()
    before = ts_compile.stats(compiled)["recompiles"]
    _generation(compiled, reference, x)
    assert ts_compile.stats(compiled)["recompiles"] == before + 1


def test_grad_mode_is_still_guarded_under_the_filter():
    model = build_model(SPEC)
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=SKIP_MODULE_GUARDS)
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad():
        compiled(x, t)
    with pytest.warns(UserWarning, match="grad is enabled"):
        out = compiled(x, t)  # a new graph: the plain compile, exact
    torch.testing.assert_close(out, model(x, t), rtol=0, atol=0)


class _Scaled(torch.nn.Module):
    """A model whose forward reads a plain attribute (as a LoRA scale or a config flag is read)."""

    def __init__(self):
        super().__init__()
        self.inner = build_model(SPEC)
        self.scale = 1.0

    def forward(self, x, t):
        return self.inner(x, t) * self.scale


@pytest.mark.parametrize("filtered", [False, True])
def test_module_attribute_edits_are_what_the_filter_gives_up(filtered):
    model = _Scaled()
    options = dict(interval=3, warmup=2, order=2)
    if filtered:
        options["guard_filter_fn"] = SKIP_MODULE_GUARDS
    compiled = compile_ts(model, **options)
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad():
        compiled(x, t)
        ts_compile.reset(compiled)
        model.scale = 2.0
        got, want = compiled(x, t), model(x, t)  # a computed step (the generation's first)
    if filtered:  # the documented price: the stale graph runs (scale 1.0)
        torch.testing.assert_close(got, want / 2.0, rtol=0, atol=0)
    else:  # the default guards see the edit and recompile
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ts_compile.skip_module_guards: the same guards dropped, the module tree checked per generation.

OURS = ts_compile.skip_module_guards


def test_ours_forecasts_equal_the_reference_and_a_quiet_model_never_trips_the_check():
    model = build_model(SPEC)
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3))
    for _ in range(3):  # later generations compare the model with the snapshot
        _generation(compiled, reference, make_inputs(SPEC))
    stats = ts_compile.stats(compiled)
    assert stats["forecast_steps"] > 0 and stats["recompiles"] == 0


def test_ours_refuses_parameters_whose_dtype_changed_under_unchanged_inputs():
    model = build_model(SPEC)
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad():
        compiled(x, t)
        ts_compile.reset(compiled)
        model.double()  # float32 inputs still match the graph's guards
        with pytest.raises(ts_compile.ModelEditedError, match=r"_parameters\['weight'\] layout"):
            compiled(x, t)


@pytest.mark.parametrize("free_tensors", [False, True], ids=["inputs", "free-tensors"])
@pytest.mark.parametrize("edit", ["attribute", "submodule", "parameter", "hook"])
def test_ours_refuses_a_model_edited_between_generations(edit, free_tensors):
    model = _Scaled()
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad(), torch._dynamo.config.patch(install_free_tensors=free_tensors):
        for _ in range(4):
            compiled(x, t)
        ts_compile.reset(compiled)
        if edit == "attribute":
            model.scale = 2.0
            needle = r"the model\.scale: 1\.0 -> 2\.0"
        elif edit == "submodule":
            model.inner.post = torch.nn.Linear(SPEC.width, SPEC.width)
            needle = r"inner\._modules\['post'\]: a Linear -> another Linear\)"
        elif edit == "parameter":
            model.inner.post.weight = torch.nn.Parameter(model.inner.post.weight.detach().clone())
            needle = r"inner\.post\._parameters\['weight'\]: a tensor \(8, 8\) torch.float32 -> another"
        else:
            model.inner.register_forward_hook(lambda module, args, out: out * 2)
            needle = r"inner\._forward_hooks count: 0 -> 1"
        with pytest.raises(ts_compile.ModelEditedError, match=needle) as error:
            compiled(x, t)
    assert "torch._dynamo.reset()" in str(error.value)


@pytest.mark.parametrize("compiler", ["eager", pytest.param("inductor", marks=pytest.mark.inductor)])
def test_ours_with_parameters_as_graph_attributes(compiler):
    """torch._dynamo.config.install_free_tensors (docs/performance.md): the parameters are graph
    attributes, not inputs. Forecasts still equal the reference, and the graphs read the
    parameters themselves (Inductor does not fold them): an in-place update (load_state_dict)
    is seen at the next step."""
    model = build_model(SPEC)
    with torch._dynamo.config.patch(install_free_tensors=True):
        compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS,
                              compiler=compiler)
        reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3))
        x = make_inputs(SPEC)
        _generation(compiled, reference, x)
        graphs = ts_compile.api.controller_of(compiled).runtimes[0].graphs
        placeholders = [n for n in graphs.compute.graph.nodes if n.op == "placeholder"]
        params = len(list(model.parameters()))
        assert len(placeholders) < params, "the parameters were still graph inputs"
        with torch.no_grad():
            model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
        _generation(compiled, reference, x)
    assert ts_compile.stats(compiled)["recompiles"] == 0


def test_ours_keeps_every_guard_of_a_plain_compile():
    """A graph the backend compiled plainly (grad enabled) has no per-generation check: the
    module guards stay, and an edit recompiles as without the filter."""
    model = _Scaled()
    compiled = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    x, t = make_inputs(SPEC), torch.ones(2)
    with pytest.warns(UserWarning, match="grad is enabled"):
        compiled(x, t)
    model.scale = 3.0
    torch.testing.assert_close(compiled(x, t), model(x, t), rtol=0, atol=0)


def test_ours_refuses_a_second_instance_sharing_the_graph():
    first, second = build_model(SPEC), build_model(SPEC)
    a = compile_ts(first, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    b = compile_ts(second, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad():
        a(x, t)
        with pytest.raises(ts_compile.ModelEditedError, match="another model instance"):
            b(x, t)


def test_ours_on_a_diffusers_flux_raises_nothing_over_generations_and_matches_plain_filtering():
    """diffusers' own forward writes nothing the check would mistake for an edit."""
    from ts_compile.cli.toy_models import tiny_flux

    model, make_step_inputs = tiny_flux(size="test")
    ours = compile_ts(model, interval=3, warmup=2, order=2, guard_filter_fn=OURS)
    theirs = compile_ts(model, interval=3, warmup=2, order=2)
    with torch.no_grad():
        for _ in range(3):
            for step in range(8):
                kwargs = make_step_inputs(step, 8)
                torch.testing.assert_close(ours(**kwargs)[0], theirs(**kwargs)[0], rtol=0, atol=0)
            ts_compile.reset(ours)
            ts_compile.reset(theirs)
    assert ts_compile.stats(ours)["forecast_steps"] > 0


def test_ours_keeps_every_guard_for_another_backend_after_a_taylorseer_compile():
    """The pending graph of a taylorseer compile without the filter must not be taken for the
    next compile's: a plain compile with the filter keeps its module guards."""
    first = compile_ts(_Scaled(), interval=3, warmup=2, order=2)  # no filter
    model = _Scaled()
    plain = torch.compile(model, backend="eager", options={"guard_filter_fn": OURS})
    x, t = make_inputs(SPEC), torch.ones(2)
    with torch.no_grad():
        first(x, t)
        plain(x, t)
        model.scale = 3.0
        torch.testing.assert_close(plain(x, t), model(x, t), rtol=0, atol=0)  # recompiled


# The per-generation check itself (module_guards.ModuleSnapshot), without a compile.

def _edits():
    def attribute(m):
        m.scale = 2.0

    def submodule(m):
        m.inner.post = torch.nn.Linear(SPEC.width, SPEC.width)

    def parameter(m):
        m.inner.post.weight = torch.nn.Parameter(m.inner.post.weight.detach().clone())

    def layout(m):  # the same Parameter object, its storage swapped for a transposed one
        m.inner.post.weight.data = m.inner.post.weight.detach().t().contiguous().t()

    def buffer(m):
        m.inner.register_buffer("extra", torch.zeros(1))

    def hook(m):
        m.inner.register_forward_hook(lambda module, args, out: out)

    def dict_entry_removed(m):
        del m.inner._modules["post"]

    def dtype(m):  # the same Parameter object, now in float64
        m.inner.post.weight.data = m.inner.post.weight.detach().double()

    def shape(m):  # the same buffer-less Parameter object, one row fewer
        m.inner.post.bias.data = m.inner.post.bias.detach()[1:].clone()

    return [attribute, submodule, parameter, layout, buffer, hook, dict_entry_removed, dtype,
            shape]


@pytest.mark.parametrize("layouts", ["torch's check", "python"])
@pytest.mark.parametrize("reader", ["dict versions", "identities"])
@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_the_snapshot_sees_each_edit_with_either_fingerprint(edit, reader, layouts, monkeypatch):
    from ts_compile import _compat, module_guards

    if reader == "identities":  # what a Python without dict version tags reads
        monkeypatch.setattr(_compat, "DICT_VERSION", None)
    elif _compat.DICT_VERSION is None:
        pytest.skip("this Python has no dict version tags")
    if layouts == "python":  # what a torch without TensorGuards reads
        monkeypatch.setattr(_compat, "TENSOR_LAYOUT_CHECK", None)
    elif _compat.TENSOR_LAYOUT_CHECK is None:
        pytest.skip("this torch has no usable TensorGuards")
    model = _Scaled()
    snapshot = module_guards.ModuleSnapshot(model)
    assert snapshot.changes(model) == [] and snapshot.fingerprint.unchanged()
    edit(model)
    assert not snapshot.fingerprint.unchanged()
    assert snapshot.changes(model), "an edit went unseen"


def test_a_tied_weight_is_checked_once_and_its_edits_are_still_seen():
    """One Parameter in two modules (tied weights): torch's layout check refuses a tensor given
    twice, so the fingerprint lists each tensor once; it must not read as changed every time."""
    from ts_compile import module_guards

    model = _Scaled()
    model.tied = torch.nn.Linear(SPEC.width, SPEC.width)
    model.tied.weight = model.inner.post.weight
    snapshot = module_guards.ModuleSnapshot(model)
    assert snapshot.fingerprint.unchanged()
    model.tied.weight.data = model.tied.weight.detach().double()
    assert not snapshot.fingerprint.unchanged()
    assert snapshot.changes(model), "an edit of a tied weight went unseen"


def test_another_dispatch_state_costs_one_comparison_then_holds():
    """torch's layout check includes the thread's dispatch keys: a snapshot taken under no_grad,
    checked under inference_mode, is compared once (nothing changed: no error) and retaken."""
    from ts_compile import module_guards

    model = _Scaled()
    with torch.no_grad():
        snapshot = module_guards.ModuleSnapshot(model)
    with torch.inference_mode():
        assert snapshot.changes(model) == []
        assert snapshot.fingerprint.unchanged()
        model.scale = 2.0
        assert snapshot.changes(model) == ["the model.scale: 1.0 -> 2.0"]


def test_a_write_that_changes_nothing_is_compared_once_and_later_edits_are_still_seen():
    from ts_compile import module_guards

    model = _Scaled()
    snapshot = module_guards.ModuleSnapshot(model)
    model.scale = float("1.0")  # another float object, equal: the graph's constant still holds
    assert not snapshot.fingerprint.unchanged()
    assert snapshot.changes(model) == []
    assert snapshot.fingerprint.unchanged(), "the fingerprint was not taken again"
    model.scale = 3.0
    assert snapshot.changes(model) == ["the model.scale: 1.0 -> 3.0"]
