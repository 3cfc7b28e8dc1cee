"""What runs between a user's call and the kernels.

Forward and backward of ``linear``, ``squared_loss`` and ``mse_loss`` run no
torch.library Python (autograd is registered in C++); the fast C++ entries of
``fused_linreg._C`` hand everything they do not take to the general ``torch.ops``
path, which gives the same results; ``optim.SGD`` keeps its momentum buffers
between steps and still honours ``load_state_dict``, step hooks and the profiler.
"""

import concurrent.futures
import copy
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import fused_linreg
from fused_linreg import _C

from conftest import randn


def python_calls(fn):
    """The (file, function) of every Python function that runs during ``fn()``."""
    calls = []

    def profiler(frame, event, arg):
        if event == "call":
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def torch_library_calls(calls):
    """Calls into torch.library's Python machinery (custom-op autograd, torch.ops dispatch)."""
    markers = ("/torch/_library/", "/torch/_ops.py", "/torch/library.py")
    return [call for call in calls if any(marker in call[0] for marker in markers)]


def beyond_our_wrapper(calls):
    """The calls besides the test's lambda, fused_linreg's wrappers and their dynamo check."""
    return [(f, name) for f, name in calls
            if not f.endswith("test_call_path.py") and "/fused_linreg/" not in f and name != "is_dynamo_compiling"]


LOSSES = [fused_linreg.squared_loss, fused_linreg.mse_loss]


def test_linear_forward_runs_only_its_wrapper(generator):
    x = randn((10, 2), generator=generator)
    w, b = randn((1, 2), generator=generator, requires_grad=True), randn((1,), generator=generator, requires_grad=True)
    assert beyond_our_wrapper(python_calls(lambda: fused_linreg.linear(x, w, b))) == []
    with torch.no_grad():
        assert beyond_our_wrapper(python_calls(lambda: fused_linreg.linear(x, w, b))) == []


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_forward_and_backward_run_no_torch_library_python(loss, generator):
    x, y = randn((10, 2), generator=generator), randn((10, 1), generator=generator)
    w, b = randn((1, 2), generator=generator, requires_grad=True), randn((1,), generator=generator, requires_grad=True)
    calls = python_calls(lambda: loss(fused_linreg.linear(x, w, b), y, reduction="sum").backward())
    assert torch_library_calls(calls) == []
    assert not any(name in ("autograd_impl", "backward_impl") for _, name in calls)
    assert w.grad is not None and b.grad is not None


def test_loss_forward_runs_only_its_wrapper(generator):
    y_hat, y = randn((16, 1), generator=generator, requires_grad=True), randn((16, 1), generator=generator)
    for loss in LOSSES:
        assert beyond_our_wrapper(python_calls(lambda: loss(y_hat, y))) == []


def test_fast_entries_decline_what_they_do_not_take(generator):
    x, w2 = randn((4, 3), generator=generator), randn((2, 3), generator=generator)
    assert _C.linear(x, w2[0], None) is NotImplemented  # 1-D weight: F.linear's special case
    assert _C.linear(x, w2, randn((1,), generator=generator)) is NotImplemented  # a bias that broadcasts
    assert _C.linear(x.numpy(), w2, None) is NotImplemented
    assert _C.linear(x.to_sparse(), w2, None) is NotImplemented
    assert _C.mse_loss(x, x.double(), "mean") is NotImplemented  # dtype promotion
    assert _C.mse_loss(x, x[0], "mean") is NotImplemented  # a broadcast (with F.mse_loss's warning)
    assert _C.mse_loss(x, x, "avg") is NotImplemented  # the general path raises ValueError
    assert _C.sgd_([x], [x], [], "0.1", 0.0, 0.0, 0.0, False, False, None, None) is NotImplemented
    assert _C.sgd_([x], [None], [], 0.1, 0.0, 0.0, 0.0, False, False, None, None) is NotImplemented


class RecordingMode(TorchFunctionMode):
    """Sees every torch function call (the general path's torch.ops calls included)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_a_torch_function_mode_sees_the_general_path_and_the_same_results(generator):
    x, y = randn((8, 3), generator=generator), randn((8, 2), generator=generator)
    w, b = randn((2, 3), generator=generator, requires_grad=True), randn((2,), generator=generator, requires_grad=True)
    fast = fused_linreg.mse_loss(fused_linreg.linear(x, w, b), y)
    with RecordingMode() as mode:
        general = fused_linreg.mse_loss(fused_linreg.linear(x, w, b), y)
    assert torch.ops.fused_linreg.linear.default in mode.seen
    assert torch.ops.fused_linreg.mse_loss.default in mode.seen
    assert torch.equal(fast, general)
    assert torch.equal(torch.autograd.grad(fast, w)[0], torch.autograd.grad(general, w)[0])


class Traced(torch.Tensor):
    """A tensor subclass with its own __torch_function__: the fast entries must not skip it."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        Traced.calls += 1
        return super().__torch_function__(func, types, args, kwargs)


def test_a_tensor_subclass_gets_its_torch_function(generator):
    x = randn((5, 3), generator=generator).as_subclass(Traced)
    w = randn((1, 3), generator=generator)
    Traced.calls = 0
    out = fused_linreg.linear(x, w)
    assert Traced.calls > 0
    torch.testing.assert_close(out.as_subclass(torch.Tensor), F.linear(x.as_subclass(torch.Tensor), w))


def test_sgd_fast_path_fills_new_buffers_in_place(generator):
    params = [randn((3,), generator=generator) for _ in range(3)]
    grads = [randn((3,), generator=generator) for _ in range(3)]
    buffers = [None, randn((3,), generator=generator), None]
    kept = buffers[1]
    fused_linreg.sgd_(params, grads, buffers, lr=0.1, momentum=0.9)
    assert buffers[1] is kept
    assert torch.equal(buffers[0], grads[0]) and torch.equal(buffers[2], grads[2])  # first step: buf = grad


def momentum_pair(generator, shapes=((4, 3), (3,), (2,))):
    ours = [randn(s, generator=generator, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return ours, theirs


def set_same_grads(pairs, generator):
    for p, q in zip(*pairs):
        p.grad = randn(p.shape, generator=generator)
        q.grad = p.grad.clone()


def test_optim_sgd_follows_load_state_dict_after_steps(generator):
    """Buffers kept between steps are dropped when load_state_dict replaces the state."""
    pairs = momentum_pair(generator)
    ours = fused_linreg.optim.SGD(pairs[0], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(pairs[1], lr=0.1, momentum=0.9)
    for _ in range(2):
        set_same_grads(pairs, generator)
        ours.step()
        theirs.step()
    snapshot = copy.deepcopy(theirs.state_dict())
    for _ in range(2):
        set_same_grads(pairs, generator)
        ours.step()
        theirs.step()
    ours.load_state_dict(snapshot)
    theirs.load_state_dict(snapshot)
    for _ in range(2):
        set_same_grads(pairs, generator)
        ours.step()
        theirs.step()
    for p, q in zip(*pairs):
        torch.testing.assert_close(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])


def test_optim_sgd_param_group_added_later_gets_its_buffers(generator):
    first, late = momentum_pair(generator, ((3,),)), momentum_pair(generator, ((2,),))
    ours = fused_linreg.optim.SGD(first[0], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(first[1], lr=0.1, momentum=0.9)
    set_same_grads(first, generator)
    ours.step()
    theirs.step()
    ours.add_param_group({"params": late[0]})
    theirs.add_param_group({"params": late[1]})
    for _ in range(2):
        set_same_grads(first, generator)
        set_same_grads(late, generator)
        ours.step()
        theirs.step()
    for p, q in zip(first[0] + late[0], first[1] + late[1]):
        torch.testing.assert_close(p, q)


def test_optim_sgd_runs_step_hooks(generator):
    pairs = momentum_pair(generator)
    optimizer = fused_linreg.optim.SGD(pairs[0], lr=0.1, momentum=0.9)
    events = []
    pre = optimizer.register_step_pre_hook(lambda opt, args, kwargs: events.append("pre"))
    post = optimizer.register_step_post_hook(lambda opt, args, kwargs: events.append("post"))
    set_same_grads(pairs, generator)
    optimizer.step()
    assert events == ["pre", "post"]
    pre.remove()
    post.remove()
    optimizer.step()
    assert events == ["pre", "post"]


def test_optim_sgd_step_is_labelled_for_the_profiler(generator):
    pairs = momentum_pair(generator)
    optimizer = fused_linreg.optim.SGD(pairs[0], lr=0.1)
    set_same_grads(pairs, generator)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        optimizer.step()
    assert any(event.name == "Optimizer.step#SGD.step" for event in prof.events())


def test_fast_entries_do_not_leak_references(generator):
    """Borrowed tensors stay borrowed: reference counts are unchanged by a step."""
    params = [randn((3,), generator=generator, requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = randn((3,), generator=generator)
    optimizer = fused_linreg.optim.SGD(params, lr=0.1, momentum=0.9)
    optimizer.step()
    before = [(sys.getrefcount(p), sys.getrefcount(p.grad)) for p in params]
    for _ in range(10):
        optimizer.step()
    assert [(sys.getrefcount(p), sys.getrefcount(p.grad)) for p in params] == before
    assert np.isfinite(torch.cat([p.detach() for p in params]).numpy()).all()


def test_optim_sgd_takes_tensor_and_numpy_hyperparameters_like_torch(generator):
    """Tensor weight_decay/lr (as torch.optim allows) and NumPy scalars take the general path."""
    pairs = momentum_pair(generator)
    hyper = dict(lr=torch.tensor(0.1), momentum=np.float32(0.9), weight_decay=torch.tensor(0.01))
    ours = fused_linreg.optim.SGD(pairs[0], **hyper)
    theirs = torch.optim.SGD(pairs[1], **hyper)
    for _ in range(3):
        set_same_grads(pairs, generator)
        ours.step()
        theirs.step()
    for p, q in zip(*pairs):
        torch.testing.assert_close(p, q)


# ---------------------------------------------------------------------------
# linreg_grad, linreg_step_ and linreg_epoch_: their fast entries.
# ---------------------------------------------------------------------------

def _linreg_data(generator, n=50, d=3, k=2, dtype=torch.float32):
    X, y = randn((n, d), generator=generator).to(dtype), randn((n, k), generator=generator).to(dtype)
    return X, y, randn((k, d), generator=generator).to(dtype), randn((k,), generator=generator).to(dtype)


def _bits(*tensors):
    return [t.detach().clone() for t in tensors]


def test_fused_step_ops_run_only_their_wrappers(generator):
    X, y, w, b = _linreg_data(generator)
    state = {}
    for call in (lambda: fused_linreg.linreg_grad(X, y, w, b),
                 lambda: fused_linreg.linreg_step_(X, y, w, b, lr=0.1, momentum=0.9, state=state),
                 lambda: fused_linreg.linreg_epoch_(X, y, w, b, lr=0.1, batch_size=7, momentum=0.9, state=state)):
        assert beyond_our_wrapper(python_calls(call)) == []


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("options", [{}, {"momentum": 0.9, "weight_decay": 0.01},
                                     {"momentum": 0.5, "nesterov": True, "maximize": True}])
def test_fused_step_fast_entries_give_the_general_paths_bits(generator, bias, options):
    """The same calls with a torch function mode active (the general path, through torch.ops) give the same bits,
    the same momentum state and the same generator state."""
    X, y, w, b = _linreg_data(generator)
    runs = []
    for mode in (None, RecordingMode()):
        weight, bias_ = w.clone(), (b.clone() if bias else None)
        state = {}
        shuffle = torch.Generator().manual_seed(3)
        torch.manual_seed(11)
        with mode if mode is not None else torch.enable_grad():
            results = [*fused_linreg.linreg_grad(X, y, weight, bias_),
                       fused_linreg.linreg_step_(X, y, weight, bias_, lr=0.05, state=state, **options),
                       fused_linreg.linreg_epoch_(X, y, weight, bias_, lr=0.05, batch_size=4, generator=shuffle,
                                                  state=state, **options),
                       fused_linreg.linreg_epoch_(X, y, weight, bias_, lr=0.05, batch_size=9, state=state, **options),
                       fused_linreg.linreg_epoch_(X, y, weight, bias_, lr=0.05, batch_size=5,
                                                  indices=torch.arange(10, 40), state=state, **options)]
        if mode is not None:
            assert torch.ops.fused_linreg.linreg_epoch_.default in mode.seen
        runs.append(([r for r in results if r is not None], weight, bias_, dict(state), shuffle.get_state(),
                     torch.get_rng_state()))
    (fast, *fast_rest), (general, *general_rest) = runs
    assert all(torch.equal(f, g) for f, g in zip(fast, general))
    for f, g in zip(fast_rest, general_rest):
        if isinstance(f, dict):
            assert f.keys() == g.keys() and all(torch.equal(f[key], g[key]) for key in f)
        else:
            assert (f is None and g is None) or torch.equal(f, g)


@pytest.mark.parametrize("n", [1, 2, 1000, 65536, 65537])
def test_epoch_default_shuffle_is_torch_randperm(n):
    """Drawn in C++ (for n <= 2^16 by our own loop over the generator's engine): torch.randperm's permutation, and
    the generator advanced as torch.randperm advances it, for a given generator and for the default one."""
    X, y, w = torch.zeros(n, 1), torch.arange(n, dtype=torch.float64).float(), torch.zeros(1, 1)
    mine, torch_s = torch.Generator().manual_seed(n), torch.Generator().manual_seed(n)
    for _ in range(2):
        losses = fused_linreg.linreg_epoch_(X, y, w, None, lr=0.0, batch_size=1, generator=mine)
        assert torch.equal(losses, 0.5 * y[torch.randperm(n, generator=torch_s)] ** 2)
    assert torch.equal(mine.get_state(), torch_s.get_state())
    torch.manual_seed(n)
    losses = fused_linreg.linreg_epoch_(X, y, w, None, lr=0.0, batch_size=1)
    after = torch.get_rng_state()
    torch.manual_seed(n)
    assert torch.equal(losses, 0.5 * y[torch.randperm(n)] ** 2)
    assert torch.equal(after, torch.get_rng_state())


def test_epoch_default_shuffle_across_sizes_and_threads():
    """The permutation's memory is kept per thread from epoch to epoch: with sizes that change between epochs and
    threads that run epochs at once and then end, every epoch still takes torch.randperm's rows."""
    def epoch_matches_randperm(n, seed):
        X, y, w = torch.zeros(n, 1), torch.arange(n, dtype=torch.float64).float(), torch.zeros(1, 1)
        losses = fused_linreg.linreg_epoch_(X, y, w, None, lr=0.0, batch_size=1,
                                            generator=torch.Generator().manual_seed(seed))
        return torch.equal(losses, 0.5 * y[torch.randperm(n, generator=torch.Generator().manual_seed(seed))] ** 2)

    assert all(epoch_matches_randperm(n, seed) for seed, n in enumerate([1000, 10, 1000, 1000, 3]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        assert all(pool.map(epoch_matches_randperm, [500] * 6 + [40] * 6, range(12)))
    assert all(epoch_matches_randperm(1000, seed) for seed in range(3))


def test_fused_step_fast_entries_decline_what_they_do_not_take(generator):
    X, y, w, b = _linreg_data(generator)
    hyper = (0.1, 0.0, 0.9, 0.0, False, False)
    assert _C.linreg_grad(X.numpy(), y, w, b) is NotImplemented
    assert _C.linreg_step_(X, y, w, b, "0.1", *hyper[1:], None) is NotImplemented
    assert _C.linreg_step_(X, y, w, b, *hyper, None) is NotImplemented  # momentum without a state: ValueError there
    assert _C.linreg_step_(X, y, w, b, *hyper, []) is NotImplemented  # not a dict: TypeError there
    late_bias = {"weight_momentum_buffer": torch.zeros_like(w)}  # the bias joins late: torch.optim's first step
    assert _C.linreg_step_(X, y, w, b, *hyper, late_bias) is NotImplemented
    assert _C.linreg_epoch_(X, y, w, b, None, None, True, *hyper, {}) is NotImplemented  # a bool batch_size
    assert _C.linreg_epoch_(X, y, w, b, None, "seed", 5, *hyper, {}) is NotImplemented
    assert _C.linreg_epoch_(X, y, w, b, None, None, 2 ** 70, *hyper, {}) is NotImplemented
    assert _C.linreg_epoch_(X[0], y, w, b, None, None, 5, *hyper, {}) is NotImplemented  # 1-D X
