"""fused_linreg.optim.SGD keeps no momentum of its own: `state` is the only record. Every edit of
it a user can make (clear, del, assignment, load_state_dict, add_param_group, deepcopy, pickle)
leads to the step torch.optim.SGD takes with that state, on the fast C++ path and on the general
path (taken e.g. under a TorchFunctionMode). A step checks every group before it writes any."""

import contextlib
import copy
import gc
import pickle

import pytest
import torch
from torch.overrides import TorchFunctionMode

from fused_linreg.optim import SGD

from conftest import assert_close_f64, randn

SHAPES = [(5, 3), (4,), (2, 2)]
HYPER = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)


class PassThrough(TorchFunctionMode):
    """Any active mode sends the optimizer down its general path."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


PATHS = {"fast": contextlib.nullcontext, "general": PassThrough}


def twins(generator, device):
    """Our optimizer and torch's over equal parameters (float64)."""
    ours = [randn(s, generator=generator, dtype=torch.float64, device=device, requires_grad=True) for s in SHAPES]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return (SGD(ours, **HYPER), ours), (torch.optim.SGD(theirs, foreach=False, **HYPER), theirs)


def step_both(pairs, generator, path):
    grads = [randn(p.shape, generator=generator, dtype=torch.float64, device=p.device) for p in pairs[0][1]]
    for optimizer, params in pairs:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        with PATHS[path]():
            optimizer.step()


def assert_same(pairs):
    (ours, params), (theirs, expected_params) = pairs
    assert_close_f64([p.detach() for p in params], [p.detach() for p in expected_params])
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state["state"].keys() == theirs_state["state"].keys()
    for index, entry in theirs_state["state"].items():
        expected = entry.get("momentum_buffer")
        got = ours_state["state"][index].get("momentum_buffer")
        assert (got is None) == (expected is None)
        if expected is not None:
            assert_close_f64(got, expected)


def replace_buffer(optimizer, params):
    optimizer.state[params[0]]["momentum_buffer"] = torch.full_like(params[0], 0.5).detach()


EDITS = {
    "state_clear": lambda opt, params: opt.state.clear(),
    "del_state_entry": lambda opt, params: opt.state.__delitem__(params[1]),
    "assign_buffer": replace_buffer,
    "assign_none": lambda opt, params: opt.state[params[2]].__setitem__("momentum_buffer", None),
    "replace_entry_dict": lambda opt, params: opt.state.__setitem__(params[0], {}),
    "buffer_changed_in_place": lambda opt, params: opt.state[params[1]]["momentum_buffer"].mul_(-2.0),
    "load_own_state_dict": lambda opt, params: opt.load_state_dict(copy.deepcopy(opt.state_dict())),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("edit", EDITS)
def test_step_after_a_state_edit_is_torch_sgds(edit, path, device, generator):
    pairs = twins(generator, device)
    for _ in range(2):
        step_both(pairs, generator, path)
    for optimizer, params in pairs:
        EDITS[edit](optimizer, params)
    for _ in range(3):
        step_both(pairs, generator, path)
        assert_same(pairs)


@pytest.mark.parametrize("path", PATHS)
def test_load_state_dict_of_an_earlier_step(path, device, generator):
    """A checkpoint taken at step 1 and loaded at step 3 brings back step 1's momentum."""
    pairs = twins(generator, device)
    step_both(pairs, generator, path)
    checkpoints = [copy.deepcopy(optimizer.state_dict()) for optimizer, _ in pairs]
    for _ in range(2):
        step_both(pairs, generator, path)
    for (optimizer, _), checkpoint in zip(pairs, checkpoints):
        optimizer.load_state_dict(checkpoint)
    for _ in range(2):
        step_both(pairs, generator, path)
        assert_same(pairs)


@pytest.mark.parametrize("path", PATHS)
def test_add_param_group_after_steps(path, device, generator):
    pairs = twins(generator, device)
    step_both(pairs, generator, path)
    extra = randn((3,), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    for (optimizer, params), new in zip(pairs, [extra, extra.detach().clone().requires_grad_()]):
        optimizer.add_param_group({"params": [new], "momentum": 0.5})
        params.append(new)
    for _ in range(3):
        step_both(pairs, generator, path)
        assert_same(pairs)


@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
def test_a_copied_optimizer_steps_on_its_own_copy(copier, device, generator):
    """The copy steps its copied parameters with the copied momentum; the original is untouched."""
    pairs = twins(generator, device)
    for _ in range(2):
        step_both(pairs, generator, "fast")
    copy_of = copy.deepcopy if copier == "deepcopy" else (lambda obj: pickle.loads(pickle.dumps(obj)))
    copies = [copy_of(optimizer) for optimizer, _ in pairs]
    copied_pairs = [(c, c.param_groups[0]["params"]) for c in copies]
    originals = [[p.detach().clone() for p in params] for _, params in pairs]
    for _ in range(2):
        step_both(copied_pairs, generator, "fast")
        assert_same(copied_pairs)
    for (_, params), before in zip(pairs, originals):
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize("path", PATHS)
def test_an_invalid_group_stops_the_step_before_any_group_is_written(path, device, generator):
    """The second group's gradient aliases its parameter: the first group is not updated either,
    and no momentum buffer is created."""
    first = randn((4, 3), generator=generator, device=device, requires_grad=True)
    second = randn((5,), generator=generator, device=device, requires_grad=True)
    optimizer = SGD([{"params": [first]}, {"params": [second], "lr": 0.5}], lr=0.1, momentum=0.9)
    first.grad = randn((4, 3), generator=generator, device=device)
    second.grad = second.detach()
    before = first.detach().clone()
    with pytest.raises(RuntimeError, match=r"grads\[0\] shares memory with params\[0\]"), PATHS[path]():
        optimizer.step()
    assert torch.equal(first.detach(), before)
    assert len(optimizer.state) == 0


def test_failing_steps_leak_nothing(generator):
    """1000 steps that raise leave no Python objects behind."""
    p = randn((4,), generator=generator, requires_grad=True)
    optimizer = SGD([p], lr=0.1, momentum=0.9)
    p.grad = p.detach()
    for _ in range(10):
        with pytest.raises(RuntimeError):
            optimizer.step()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(1000):
        try:
            optimizer.step()
        except RuntimeError:
            pass
    gc.collect()
    assert len(gc.get_objects()) - before < 50


@pytest.mark.parametrize("name", ["lr", "momentum", "dampening", "weight_decay"])
def test_string_hyperparameters_raise_our_type_error(name, generator):
    p = randn((3,), generator=generator, requires_grad=True)
    with pytest.raises(TypeError, match=rf"fused_linreg\.optim\.SGD: {name} must be a number, got str"):
        SGD([p], **{"lr": 0.1, name: "0.01"})
    optimizer = SGD([p], lr=0.1)
    q = randn((3,), generator=generator, requires_grad=True)
    with pytest.raises(TypeError, match=rf"fused_linreg\.optim\.SGD: {name} must be a number, got str"):
        optimizer.add_param_group({"params": [q], name: "0.01"})
