"""fused_linreg.optim.SGD as a drop-in for torch.optim.SGD(foreach=False): the same
trajectory, state, state_dict, validation and GradScaler behaviour."""

import copy
import math

import pytest
import torch

from fused_linreg.optim import SGD

from conftest import assert_close_to_reference, randn, sgd_hyperparameters

LR = 0.05
SHAPES = [(5, 3), (5,), (4,), (2, 2)]
LATE, INTERMITTENT = 2, 3  # indices into SHAPES


def has_grad_at(index, step):
    """The late parameter gets its first gradient at step 5; the intermittent one has
    none at steps 8 to 10 (its momentum buffer must survive those)."""
    return not ((index == LATE and step < 5) or (index == INTERMITTENT and 8 <= step <= 10))


def twin_params(device, dtype, generator, shapes=SHAPES):
    ours = [randn(s, generator=generator, dtype=dtype, device=device, requires_grad=True) for s in shapes]
    return ours, [p.detach().clone().requires_grad_() for p in ours]


def set_grads(params_lists, step, generator):
    shapes = [p.shape for p in params_lists[0]]
    like = params_lists[0][0]
    for i, shape in enumerate(shapes):
        grad = randn(shape, generator=generator, dtype=like.dtype, device=like.device) if has_grad_at(i, step) else None
        for params in params_lists:
            params[i].grad = None if grad is None else grad.clone()


def assert_same_state(ours, expected, params, expected_params):
    for p, q in zip(params, expected_params):
        assert_close_to_reference(p, q)
        buf, expected_buf = ours.state[p].get("momentum_buffer"), expected.state[q].get("momentum_buffer")
        assert (buf is None) == (expected_buf is None)
        if buf is not None:
            assert_close_to_reference(buf, expected_buf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("hyper", sgd_hyperparameters(valid=True))
def test_sgd_matches_torch_sgd_over_20_steps(hyper, dtype, device, generator):
    params, expected_params = twin_params(device, dtype, generator)
    ours = SGD(params, lr=LR, **hyper)
    expected = torch.optim.SGD(expected_params, lr=LR, foreach=False, **hyper)
    for step in range(20):
        set_grads([params, expected_params], step, generator)
        ours.step()
        expected.step()
        assert_same_state(ours, expected, params, expected_params)


@pytest.mark.parametrize("hyper", sgd_hyperparameters(valid=False))
def test_invalid_nesterov_raises_like_torch(hyper, device):
    params = [torch.ones(3, device=device, requires_grad=True)]
    for optimizer in (torch.optim.SGD, SGD):
        with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
            optimizer(params, lr=LR, **hyper)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(lr=-0.1), "Invalid learning rate"),
    (dict(lr=0.1, momentum=-0.5), "Invalid momentum value"),
    (dict(lr=0.1, weight_decay=-1.0), "Invalid weight_decay value"),
], ids=["lr", "momentum", "weight_decay"])
def test_negative_hyperparameters_raise_like_torch(kwargs, match):
    params = [torch.ones(3, requires_grad=True)]
    for optimizer in (torch.optim.SGD, SGD):
        with pytest.raises(ValueError, match=match):
            optimizer(params, **kwargs)


@pytest.mark.parametrize("name", ["lr", "momentum", "dampening", "weight_decay"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_hyperparameters_raise(name, value):
    """Stricter than torch.optim.SGD, which accepts nan and inf."""
    params = [torch.ones(3, requires_grad=True)]
    kwargs = {"lr": 0.1, name: value}
    with pytest.raises(ValueError, match=name):
        SGD(params, **kwargs)
    optimizer = SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=name):
        optimizer.add_param_group({"params": [torch.ones(2, requires_grad=True)], **kwargs})
    assert len(optimizer.param_groups) == 1


def test_is_a_torch_sgd_that_grad_scaler_hands_its_scale_to():
    optimizer = SGD([torch.ones(3, requires_grad=True)], lr=0.1)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer._step_supports_amp_scaling


def test_param_groups_with_their_own_hyperparameters(device, generator):
    params, expected_params = twin_params(device, torch.float64, generator)

    def groups(ps):
        return [{"params": ps[:2], "momentum": 0.9, "nesterov": True},
                {"params": ps[2:], "lr": 0.2, "weight_decay": 0.1, "maximize": True, "dampening": 0.3,
                 "momentum": 0.5}]

    ours = SGD(groups(params), lr=LR)
    expected = torch.optim.SGD(groups(expected_params), lr=LR, foreach=False)
    for step in range(8):
        set_grads([params, expected_params], step, generator)
        ours.step()
        expected.step()
        assert_same_state(ours, expected, params, expected_params)


def test_learning_rate_changes_take_effect(device, generator):
    params, expected_params = twin_params(device, torch.float64, generator)
    ours = SGD(params, lr=LR, momentum=0.9)
    expected = torch.optim.SGD(expected_params, lr=LR, momentum=0.9, foreach=False)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (ours, expected)]
    for step in range(8):
        set_grads([params, expected_params], step, generator)
        ours.step()
        expected.step()
        for scheduler in schedulers:
            scheduler.step()
        assert_same_state(ours, expected, params, expected_params)


def test_tensor_learning_rate(device, generator):
    params, expected_params = twin_params(device, torch.float32, generator)
    ours = SGD(params, lr=torch.tensor(LR), momentum=0.9, weight_decay=0.01)
    expected = torch.optim.SGD(expected_params, lr=torch.tensor(LR), momentum=0.9, weight_decay=0.01, foreach=False)
    for step in range(6):
        set_grads([params, expected_params], step, generator)
        ours.step()
        expected.step()
        assert_same_state(ours, expected, params, expected_params)


def test_step_with_closure(device, generator):
    x = randn((16, 3), generator=generator, device=device)
    params, expected_params = twin_params(device, torch.float32, generator, shapes=[(3,)])

    def losses_of_three_steps(optimizer, p):
        def closure():
            optimizer.zero_grad()
            loss = (x @ p).square().mean()
            loss.backward()
            return loss
        return [optimizer.step(closure) for _ in range(3)]

    losses = losses_of_three_steps(SGD(params, lr=LR, momentum=0.9), params[0])
    expected = losses_of_three_steps(torch.optim.SGD(expected_params, lr=LR, momentum=0.9, foreach=False),
                                     expected_params[0])
    for loss, expected_loss in zip(losses, expected):
        assert_close_to_reference(loss, expected_loss.double())
    assert_close_to_reference(params[0], expected_params[0])


@pytest.mark.parametrize("hyper", [
    dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01, maximize=False),
    dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=True),
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False),
], ids=["momentum", "nesterov", "dampening-maximize", "no_momentum"])
def test_grad_scaler_skipped_steps_match_torch_sgd(hyper, device, generator):
    """GradScaler skips steps with inf/NaN grads (here the very first one and two later
    ones); after the skipped first step no momentum state may exist, and the whole
    trajectory, scale included, matches torch.optim.SGD stepped by its own GradScaler."""
    skipped = {0: math.inf, 4: math.nan, 5: -math.inf}
    x = randn((32, 4), generator=generator, device=device)
    y = randn((32, 3), generator=generator, device=device)
    params, expected_params = twin_params(device, torch.float32, generator, shapes=[(3, 4), (3,)])
    initial = [p.detach().clone() for p in params]
    runs = [(params, SGD(params, lr=LR, **hyper)),
            (expected_params, torch.optim.SGD(expected_params, lr=LR, foreach=False, **hyper))]
    scalers = [torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=3) for _ in runs]
    for step in range(14):
        for (ps, optimizer), scaler in zip(runs, scalers):
            optimizer.zero_grad()
            loss = ((x @ ps[0].T + ps[1] - y) ** 2).mean()
            scaler.scale(loss).backward()
            if step in skipped:
                ps[0].grad[1, 2] = skipped[step]
            scaler.step(optimizer)
            scaler.update()
        if step == 0:
            assert all(runs[0][1].state[p].get("momentum_buffer") is None for p in params)
            assert all(torch.equal(p, before) for p, before in zip(params, initial))
        assert scalers[0].get_scale() == scalers[1].get_scale()
        assert_same_state(runs[0][1], runs[1][1], params, expected_params)


@pytest.mark.parametrize("direction", ["fused_to_torch", "torch_to_fused"])
def test_state_dict_round_trip_with_torch_sgd(direction, device, generator):
    """Train one optimizer, load its state_dict into the other kind on copies of the
    parameters, and continue both: they stay together. The late parameter has no state
    yet when the state dict is saved."""
    hyper = dict(lr=LR, momentum=0.9, dampening=0.1, weight_decay=0.01)
    first_cls, second_cls = (SGD, torch.optim.SGD) if direction == "fused_to_torch" else (torch.optim.SGD, SGD)
    params = [randn(s, generator=generator, device=device, requires_grad=True) for s in SHAPES]
    first = first_cls(params, foreach=False, **hyper)
    for step in range(4):
        set_grads([params], step, generator)
        first.step()
    saved = copy.deepcopy(first.state_dict())  # as if saved to disk: no tensors shared with `first`
    assert set(saved["state"]) == {i for i in range(len(SHAPES)) if i != LATE}
    assert all(set(entry) == {"momentum_buffer"} for entry in saved["state"].values())

    copies = [p.detach().clone().requires_grad_() for p in params]
    second = second_cls(copies, lr=1.0)
    second.load_state_dict(saved)
    for key, value in saved["param_groups"][0].items():
        if key != "params":
            assert second.param_groups[0][key] == value
    for step in range(4, 10):
        set_grads([params, copies], step, generator)
        first.step()
        second.step()
        assert_same_state(first, second, params, copies)
