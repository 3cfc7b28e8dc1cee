"""Bad input raises an error that names the op and the argument, before anything is written:
every tensor involved (and every momentum buffer) is byte-identical afterwards.

The cases form one registry: bad_input_cases.py (linear, the losses, sgd_, optim.SGD) and
bad_input_cases_linreg.py (linreg_step_, linreg_grad, linreg_epoch_) register into it."""

import pytest
import torch

import bad_input_cases_linreg  # noqa: F401  (registers the cases of the fused linear-regression ops)
from bad_input_cases import CASES, CUDA_CASES
from conftest import assert_unchanged, snapshot

# The case ids are the builders' names: two builders of one name would hide one another's failures.
assert len({case.id for case in CASES + CUDA_CASES}) == len(CASES) + len(CUDA_CASES)


@pytest.mark.parametrize(("build", "raises", "match"), CASES)
def test_bad_input_raises_and_changes_nothing(build, raises, match, device, generator):
    call, tensors = build(device, generator)
    before = snapshot(tensors)
    with pytest.raises(raises, match=match):
        call()
    assert_unchanged(tensors, before)


@pytest.mark.cuda
@pytest.mark.parametrize(("build", "raises", "match"), CUDA_CASES)
def test_device_mix_raises_and_changes_nothing(build, raises, match, generator):
    call, tensors = build(generator)
    before = snapshot(tensors)
    with pytest.raises(raises, match=match):
        call()
    torch.cuda.synchronize()
    assert_unchanged(tensors, before)
