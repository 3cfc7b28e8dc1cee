"""torch.compile(fullgraph=True) of a training step built from our ops — linear, a loss,
backward and sgd_ — matches eager. On CUDA also with CUDA graphs (mode="reduce-overhead").
The fused linear-regression ops (linreg_step_, linreg_epoch_, linreg_grad) compile to the
eager results bitwise."""

import pytest
import torch
import torch._dynamo

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from conftest import LR, MOMENTUM, assert_bitwise_equal, assert_close_to_reference, make_problem, randn

HYPER = dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)
STEPS = 4
MODES = [
    pytest.param("cpu", "default", id="cpu"),
    pytest.param("cuda", "default", id="cuda", marks=pytest.mark.cuda),
    pytest.param("cuda", "reduce-overhead", id="cuda-graphs", marks=pytest.mark.cuda),
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def loss_of(X, y, weight, bias):
    return fused_linreg.squared_loss(fused_linreg.linear(X, weight, bias), y, reduction="mean")


def update(params, grads, buffers):
    fused_linreg.sgd_(params, grads, buffers, **HYPER)


def whole_step(X, y, params, buffers):
    loss = loss_of(X, y, *params)
    grads = torch.autograd.grad(loss, params)
    update(params, list(grads), buffers)
    return loss.detach()


def split_step(compile_fn):
    """Forward+loss and the update compiled separately, backward run by autograd (through
    the compiled backward graph): works on every torch version."""
    compiled_loss, compiled_update = compile_fn(loss_of), compile_fn(update)

    def step(X, y, params, buffers):
        # Under CUDA graphs, outputs live in the graphs' memory pool, which a later
        # replay reuses: torch asks to mark each iteration's start and to copy the
        # outputs that outlive it (the loss, the gradients) outside the graphs.
        torch.compiler.cudagraph_mark_step_begin()
        loss = compiled_loss(X, y, *params)
        loss_value = loss.detach().clone()
        grads = [g.clone() for g in torch.autograd.grad(loss, params)]
        compiled_update(params, grads, buffers)
        return loss_value

    return step


def train(step, device, generator, zero_buffers=False):
    """STEPS training steps of a 3-output linear regression from fixed data and init.

    With `zero_buffers` the momentum buffers start as zeros instead of None: the same
    first update without dampening (buf = 0.9 * 0 + g = g), but allocated outside the
    compiled code, as CUDA graphs need (a buffer created inside one lives in the graphs'
    pool and a later replay overwrites it)."""
    X = randn((256, 16), generator=generator, device=device)
    y = randn((256, 3), generator=generator, device=device)
    params = [randn((3, 16), generator=generator, device=device, requires_grad=True),
              randn((3,), generator=generator, device=device, requires_grad=True)]
    buffers = [torch.zeros_like(p) for p in params] if zero_buffers else [None, None]
    losses = [step(X, y, params, buffers).clone() for _ in range(STEPS)]
    return losses, params, buffers


def assert_same_training(compiled, eager):
    for got, expected in zip(*(torch.stack(run[0]) for run in (compiled, eager))):
        assert_close_to_reference(got, expected.double())
    for got, expected in zip(compiled[1] + compiled[2], eager[1] + eager[2]):
        assert_close_to_reference(got, expected.double())


@pytest.mark.parametrize(("device", "mode"), MODES)
def test_compiled_training_step_matches_eager(device, mode):
    def compile_fn(fn):
        return torch.compile(fn, fullgraph=True, mode=mode)

    cuda_graphs = mode == "reduce-overhead"
    compiled = train(split_step(compile_fn), device, torch.Generator().manual_seed(0), zero_buffers=cuda_graphs)
    eager = train(whole_step, device, torch.Generator().manual_seed(0))
    assert_same_training(compiled, eager)


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "trace_autograd_ops"),
                    reason="this torch cannot trace torch.autograd.grad inside a compiled graph")
@pytest.mark.parametrize(("device", "mode"), MODES)
def test_whole_training_step_compiles_as_one_graph(device, mode):
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled_step = torch.compile(whole_step, fullgraph=True, mode=mode)
        compiled = train(compiled_step, device, torch.Generator().manual_seed(0))
    eager = train(whole_step, device, torch.Generator().manual_seed(0))
    assert_same_training(compiled, eager)


def test_optimizer_step_compiles_as_one_graph_of_our_op():
    """torch.compile(optimizer.step, fullgraph=True) traces fused_linreg.sgd_ (not the
    eager-only C++ entry) and trains as the eager step does."""
    traced_ops = []

    def recording_backend(graph_module, example_inputs):
        traced_ops.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return graph_module.forward

    def trained(compile_step):
        generator = torch.Generator().manual_seed(0)
        X, y = randn((64, 8), generator=generator), randn((64, 2), generator=generator)
        model = fused_linreg.nn.Linear(8, 2)
        with torch.no_grad():
            model.weight.copy_(randn((2, 8), generator=generator))
            model.bias.copy_(randn((2,), generator=generator))
        optimizer = fused_linreg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
        step = torch.compile(optimizer.step, fullgraph=True, backend=recording_backend) if compile_step else \
            optimizer.step
        for _ in range(STEPS):
            optimizer.zero_grad()
            fused_linreg.mse_loss(model(X), y).backward()
            step()
        return [model.weight, model.bias, *(optimizer.state[p]["momentum_buffer"] for p in model.parameters())]

    compiled, eager = trained(True), trained(False)
    assert any("fused_linreg.sgd_" in op for op in traced_ops), traced_ops
    assert_bitwise_equal(compiled, eager)


def test_compiled_linreg_ops_equal_eager_bitwise(device, generator):
    """fullgraph compile (fake kernels, functionalized in-place ops, the state dict written
    on the first call and read on the second) gives the eager results bitwise."""
    X, y, weight, bias = make_problem(100, 4, 2, generator=generator, device=device)
    indices = torch.randperm(100, generator=generator).to(device)

    def fused_training(weight, bias, state):
        step_loss = fused_linreg.linreg_step_(X, y, weight, bias, lr=LR, state=state, **MOMENTUM)
        epoch_losses = fused_linreg.linreg_epoch_(X, y, weight, bias, lr=LR, batch_size=7, indices=indices,
                                                  state=state, **MOMENTUM)
        return [step_loss, epoch_losses, *fused_linreg.linreg_grad(X, y, weight, bias)]

    compiled = torch.compile(fused_training, backend="aot_eager", fullgraph=True)
    eager_params, eager_state, state = [weight.clone(), bias.clone()], {}, {}
    for _ in range(2):
        results = compiled(weight, bias, state) + [weight, bias]
        expected = fused_training(*eager_params, eager_state) + eager_params
        assert_bitwise_equal(results, expected)
        assert set(state) == set(eager_state) == {WEIGHT_BUFFER, BIAS_BUFFER}
        for name in state:
            assert_bitwise_equal(state[name], eager_state[name], name)
