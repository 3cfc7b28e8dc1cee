"""The exact solver: torch.ops.fused_linreg.linreg_gram against a float64 reference, and
LinearRegression(solver="normal"/"auto") against scikit-learn's LinearRegression (coefficients,
sample weights, rank-deficient data), the ridge problem that weight_decay defines (and that SGD
converges to), partial_fit's accumulation, memory maps, sample weights with SGD, score's weights,
loud divergence in float64, and torch.distributed (two gloo processes)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from sklearn.datasets import load_diabetes, make_regression
from sklearn.linear_model import LinearRegression as ClosedForm
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

import fused_linreg
from fused_linreg import estimator as estimator_module

from memory_probe import run_probe

LinearRegression = fused_linreg.LinearRegression
gram_op = torch.ops.fused_linreg.linreg_gram


def reference_gram(X, y, w, x_shift, y_shift):
    """sum_i w_i a_i a_i^T with a_i = [x_i - x_shift, y_i - y_shift, 1], in float64."""
    n = X.shape[0]
    rows = torch.cat([X.double() - x_shift, y.double().reshape(n, -1) - y_shift, torch.ones(n, 1, dtype=torch.float64)],
                     dim=1)
    weights = torch.ones(n, dtype=torch.float64) if w is None else w.double()
    return (rows * weights[:, None]).T @ rows


def random_problem(n, d, k, dtype, seed=0, weighted=False, one_d=False):
    g = torch.Generator().manual_seed(seed)
    X = (torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 7).to(dtype)
    y = (torch.randn(n, k, generator=g, dtype=torch.float64) - 2).to(dtype)
    if one_d:
        y = y[:, 0]
    w = torch.rand(n, generator=g, dtype=torch.float64) * 2 if weighted else None
    x_shift = torch.randn(d, generator=g, dtype=torch.float64) + 7
    y_shift = torch.randn(k, generator=g, dtype=torch.float64) - 2
    return X, y, w, x_shift, y_shift


# ---------------------------------------------------------------------------
# The op.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (37, 5, 1), (300, 12, 3), (40000, 7, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_gram_matches_the_float64_reference(dtype, n, d, k, weighted):
    X, y, w, xs, ys = random_problem(n, d, k, dtype, weighted=weighted)
    got = gram_op(X, y, w, xs, ys)
    assert got.dtype == torch.float64 and got.shape == (d + k + 1, d + k + 1)
    want = reference_gram(X, y, w, xs, ys)  # of the same (rounded) inputs
    # float64 input: only the order of the sums differs; narrower input: float32 products too.
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gram_with_float_shifts_gives_the_float64_routes_bits(dtype):
    """Shifts that are floats (shifts_of rounds them so for narrower data) let the op shift rows by float32
    subtractions, which round as the float64 route does: the same sums as with unit weights (which take that route)."""
    X, y, _, xs, ys = random_problem(3000, 11, 2, dtype)
    xs, ys = xs.float().double(), ys.float().double()
    unweighted = gram_op(X, y, None, xs, ys)
    assert torch.equal(unweighted, gram_op(X, y, torch.ones(3000, dtype=torch.float64), xs, ys))
    want = reference_gram(X, y, None, xs, ys)
    torch.testing.assert_close(unweighted, want, rtol=2e-6, atol=2e-6 * want.abs().max().item())


def test_gram_of_a_1d_y_and_of_no_rows():
    X, y, w, xs, ys = random_problem(50, 4, 1, torch.float64, one_d=True, weighted=True)
    torch.testing.assert_close(gram_op(X, y, w, xs, ys), reference_gram(X, y, w, xs, ys))
    empty = gram_op(X[:0], y[:0], w[:0], xs, ys)
    assert torch.equal(empty, torch.zeros(6, 6, dtype=torch.float64))


def test_gram_is_bitwise_the_same_for_any_thread_count():
    X, y, w, xs, ys = random_problem(70000, 9, 2, torch.float32, weighted=True)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(gram_op(X, y, w, xs, ys))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_gram_adds_over_row_shards():
    X, y, w, xs, ys = random_problem(5000, 6, 2, torch.float64, weighted=True)
    whole = gram_op(X, y, w, xs, ys)
    parts = sum(gram_op(X[a:b], y[a:b], w[a:b], xs, ys) for a, b in [(0, 1234), (1234, 4000), (4000, 5000)])
    torch.testing.assert_close(parts, whole, rtol=1e-13, atol=1e-9)


def test_gram_opcheck():
    X, y, w, xs, ys = random_problem(64, 5, 2, torch.float64, weighted=True)
    torch.library.opcheck(gram_op, (X, y, w, xs, ys))
    torch.library.opcheck(gram_op, (X.float(), y[:, 0].float(), None, xs, ys[:1]))


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(X=a["X"].int()), "X must be float64, float32"),
    (lambda a: a.update(X=a["X"][:, 0]), "X must be 2-D"),
    (lambda a: a.update(y=a["y"].double()), "y has dtype"),
    (lambda a: a.update(y=a["y"][:-1]), "y must have shape"),
    (lambda a: a.update(w=a["w"][:-1]), "sample_weight must have shape"),
    (lambda a: a.update(w=-a["w"]), "sample_weight must be non-negative"),
    (lambda a: a.update(w=a["w"] * float("nan")), "sample_weight must be non-negative"),
    (lambda a: a.update(xs=a["xs"].float()), "x_shift must be a float64 tensor"),
    (lambda a: a.update(xs=a["xs"][:-1]), "x_shift must have shape"),
    (lambda a: a.update(ys=torch.zeros(3, dtype=torch.float64)), "y_shift must have shape"),
])
def test_gram_bad_input_names_the_argument(change, match):
    X, y, w, xs, ys = random_problem(20, 4, 2, torch.float32, weighted=True)
    args = dict(X=X, y=y, w=w, xs=xs, ys=ys)
    change(args)
    with pytest.raises(RuntimeError, match=rf"fused_linreg\.linreg_gram: {match}"):
        gram_op(args["X"], args["y"], args["w"], args["xs"], args["ys"])


def test_gram_is_not_differentiable_and_refuses_transforms():
    X, y, w, xs, ys = random_problem(20, 3, 1, torch.float64)
    out = gram_op(X.requires_grad_(), y, w, xs, ys)
    with pytest.raises(RuntimeError, match="linreg_gram is not differentiable"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="linreg_gram does not support torch.func"):
        torch.func.vmap(lambda x: gram_op(x, y, None, xs, ys))(X.detach().unsqueeze(0))


def test_gram_refuses_forward_mode_ad():
    X, y, w, xs, ys = random_problem(20, 3, 1, torch.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(X, torch.randn_like(X))
        with pytest.raises(RuntimeError, match="linreg_gram does not support forward-mode AD"):
            gram_op(dual, y, w, xs, ys)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_and_the_fit_on_cuda_match_the_cpu(dtype):
    X, y, w, xs, ys = random_problem(5000, 6, 2, dtype, weighted=True)
    on_gpu = gram_op(X.cuda(), y.cuda(), w.cuda(), xs.cuda(), ys.cuda())
    torch.testing.assert_close(on_gpu.cpu(), gram_op(X, y, w, xs, ys), rtol=1e-6 if dtype == torch.float32 else 1e-12,
                               atol=1e-6)
    gpu_fit = LinearRegression().fit(X.cuda(), y.cuda(), sample_weight=w.cuda())
    cpu_fit = LinearRegression().fit(X, y, sample_weight=w)
    assert gpu_fit.weight_.device.type == "cuda"
    np.testing.assert_allclose(gpu_fit.coef_, cpu_fit.coef_, rtol=1e-5 if dtype == torch.float32 else 1e-10)


# ---------------------------------------------------------------------------
# The estimator's exact solver.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,k", [(500, 8, None), (2000, 20, 3), (30, 30, None), (12, 40, 2)])
@pytest.mark.parametrize("solver", ["normal", "auto"])
def test_coefficients_equal_scikit_learn_in_float64(n, d, k, solver):
    X, y = make_regression(n_samples=n, n_features=d, n_targets=k or 1, noise=3.0, bias=5.0, random_state=d)
    X = X + np.linspace(-50, 50, d)  # far from 0: the shifts keep the centred sums exact
    closed = ClosedForm().fit(X, y)
    ours = LinearRegression(solver=solver).fit(X, y)
    assert ours.solver_ == "normal" and ours.n_iter_ == 1
    assert ours.coef_.shape == closed.coef_.shape and ours.coef_.dtype == np.float64
    scale = np.abs(closed.coef_).max()
    np.testing.assert_allclose(ours.coef_, closed.coef_, rtol=1e-8, atol=1e-8 * scale)
    np.testing.assert_allclose(ours.intercept_, np.atleast_1d(closed.intercept_), rtol=1e-8,
                               atol=1e-8 * np.abs(closed.intercept_).max())


def test_float32_r2_equals_scikit_learn():
    X, y = make_regression(n_samples=20000, n_features=20, noise=10.0, random_state=0)
    X, y = X.astype(np.float32), y.astype(np.float32)
    closed = ClosedForm().fit(X.astype(np.float64), y.astype(np.float64))
    ours = LinearRegression().fit(X, y)
    assert ours.weight_.dtype == torch.float32 and ours.predict(X).dtype == np.float32
    assert ours.score(X, y) == pytest.approx(closed.score(X, y), abs=1e-6)


@pytest.mark.parametrize("case", ["duplicate column", "constant column", "zero column", "more features than rows"])
def test_rank_deficient_data_gets_the_minimum_norm_answer_of_scikit_learn(case):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 6))
    if case == "duplicate column":
        X[:, 4] = X[:, 1]
    elif case == "constant column":
        X[:, 2] = 3.5
    elif case == "zero column":
        X[:, 0] = 0.0
    else:
        X = rng.standard_normal((5, 9))
    y = X @ rng.standard_normal(X.shape[1]) + 0.1 * rng.standard_normal(X.shape[0]) + 2
    closed = ClosedForm().fit(X, y)
    ours = LinearRegression(solver="normal").fit(X, y)
    np.testing.assert_allclose(ours.coef_, closed.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.intercept_[0], closed.intercept_, rtol=1e-7, atol=1e-9)


def test_sample_weight_equals_scikit_learn_and_repeated_rows():
    X, y = make_regression(n_samples=300, n_features=6, n_targets=2, noise=4.0, random_state=1)
    counts = np.random.default_rng(0).integers(0, 4, size=300)
    closed = ClosedForm().fit(X, y, sample_weight=counts)
    ours = LinearRegression().fit(X, y, sample_weight=counts)
    np.testing.assert_allclose(ours.coef_, closed.coef_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.intercept_, closed.intercept_, rtol=1e-9, atol=1e-9)
    repeated = LinearRegression().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts, axis=0))
    np.testing.assert_allclose(ours.coef_, repeated.coef_, rtol=1e-9, atol=1e-9)
    tensor_weights = LinearRegression().fit(torch.from_numpy(X), torch.from_numpy(y),
                                            sample_weight=torch.from_numpy(counts))
    np.testing.assert_allclose(tensor_weights.coef_, ours.coef_, rtol=1e-12, atol=1e-12)
    assert ours.score(X, y, sample_weight=counts) == pytest.approx(
        r2_score(y, ours.predict(X), sample_weight=counts), abs=1e-12)


@pytest.mark.parametrize("weights,match", [
    (np.ones(7), r"sample_weight.shape == \(7,\), expected \(10,\)"),
    (-np.ones(10), "non-negative"),
    (np.full(10, np.nan), "NaN"),
    (np.zeros(10), "sample_weight sums to zero"),
])
def test_bad_sample_weight_raises(weights, match):
    X, y = make_regression(n_samples=10, n_features=3, random_state=0)
    with pytest.raises(ValueError, match=match):
        LinearRegression().fit(X, y, sample_weight=weights)


def ridge_reference(X, y, w, lam):
    """Minimiser of (1/(2n)) sum w ||x coef + b - y||^2 + lam/2 (||coef||^2 + ||b||^2), by lstsq on
    the augmented system [sqrt(w/n) [X, 1]; sqrt(lam) I] theta = [sqrt(w/n) y; 0]."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))]) * np.sqrt(w / n)[:, None]
    A = np.vstack([A, np.sqrt(lam) * np.eye(d + 1)])
    b = np.concatenate([y * np.sqrt(w / n), np.zeros(d + 1)])
    theta = np.linalg.lstsq(A, b, rcond=None)[0]
    return theta[:d], theta[d]


def test_weight_decay_solves_the_ridge_problem_that_sgd_converges_to():
    X, y = make_regression(n_samples=400, n_features=5, noise=2.0, bias=4.0, random_state=2)
    X = StandardScaler().fit_transform(X)
    w = np.random.default_rng(1).uniform(0.2, 2.0, size=400)
    lam = 0.3
    coef, intercept = ridge_reference(X, y, w, lam)
    exact = LinearRegression(solver="normal", weight_decay=lam).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(exact.coef_, coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(exact.intercept_[0], intercept, rtol=1e-9, atol=1e-9)
    # Full-batch SGD (gradient descent) on the same loss ends at the same point.
    descent = LinearRegression(solver="sgd", weight_decay=lam, lr=0.5, batch_size=400, max_iter=400, tol=None,
                               shuffle=False, random_state=0).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(descent.coef_, coef, rtol=0, atol=1e-6 * np.abs(coef).max())
    np.testing.assert_allclose(descent.intercept_[0], intercept, rtol=0, atol=1e-6 * abs(intercept))
    assert exact.loss_curve_[0] == pytest.approx(descent.loss_curve_[-1], rel=1e-6)


def test_sgd_with_unit_weights_trains_like_no_weights():
    X, y = make_regression(n_samples=500, n_features=4, noise=1.0, random_state=3)
    X = StandardScaler().fit_transform(X)
    plain = LinearRegression(solver="sgd", max_iter=5, tol=None, random_state=0, momentum=0.5).fit(X, y)
    weighted = LinearRegression(solver="sgd", max_iter=5, tol=None, random_state=0, momentum=0.5).fit(
        X, y, sample_weight=np.ones(500))
    np.testing.assert_allclose(weighted.coef_, plain.coef_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(weighted.intercept_, plain.intercept_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(weighted.loss_curve_, plain.loss_curve_, rtol=1e-10)
    weighted.partial_fit(X, y, sample_weight=np.ones(500))  # momentum buffers carried across the fold
    plain.partial_fit(X, y)
    np.testing.assert_allclose(weighted.coef_, plain.coef_, rtol=1e-10, atol=1e-10)


def test_partial_fit_accumulates_an_exact_fit_of_every_row_seen():
    X, y = make_regression(n_samples=900, n_features=7, n_targets=2, noise=5.0, random_state=4)
    w = np.random.default_rng(2).uniform(0, 3, size=900)
    model = LinearRegression()
    for start in range(0, 900, 300):
        model.partial_fit(X[start : start + 300], y[start : start + 300], sample_weight=w[start : start + 300])
    whole = ClosedForm().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(model.coef_, whole.coef_, rtol=1e-9, atol=1e-9)
    assert len(model.loss_curve_) == 3 and model.solver_ == "normal"
    with pytest.raises(ValueError, match="3 outputs"):
        model.partial_fit(X, np.c_[y, y[:, 0]])
    np.testing.assert_allclose(model.coef_, whole.coef_, rtol=1e-9, atol=1e-9)  # unchanged by the failure


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_memmap_in_many_chunks_is_the_in_memory_answer(dtype, tmp_path):
    X, y = make_regression(n_samples=5000, n_features=9, noise=3.0, bias=2.0, random_state=5)
    X = (X + 10).astype(dtype)
    mapped = np.memmap(tmp_path / "X.bin", dtype=dtype, mode="w+", shape=X.shape)
    mapped[:] = X
    mapped.flush()
    w = np.random.default_rng(3).uniform(0, 2, size=5000)
    streamed = LinearRegression(chunk_bytes=64 * 9 * X.itemsize).fit(mapped, y, sample_weight=w)
    in_memory = LinearRegression().fit(X, y, sample_weight=w)
    rtol = 1e-9 if dtype == np.float64 else 1e-5  # float32 products, summed over other blocks
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(streamed.coef_, ClosedForm().fit(X.astype(np.float64), y, sample_weight=w).coef_,
                               rtol=1e-6 if dtype == np.float32 else 1e-9)


def test_auto_takes_sgd_beyond_its_column_limit(monkeypatch):
    X, y = make_regression(n_samples=200, n_features=6, random_state=0)
    X = StandardScaler().fit_transform(X)
    assert LinearRegression().fit(X, y).solver_ == "normal"
    monkeypatch.setattr(estimator_module, "AUTO_NORMAL_MAX_COLUMNS", 7)
    assert LinearRegression(max_iter=3, tol=None).fit(X, y).solver_ == "sgd"


def test_bad_solver_raises():
    with pytest.raises(ValueError, match="solver must be one of 'auto', 'normal', 'sgd', got 'lbfgs'"):
        LinearRegression(solver="lbfgs").fit(np.ones((3, 1)), np.ones(3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_divergence_raises_in_every_dtype(dtype):
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(dtype)
    model = LinearRegression(solver="sgd", lr=1.0, random_state=0)
    with pytest.raises(ValueError, match=r"diverged in epoch 1 .*lr=1\.0"):
        model.fit(X, y)
    assert not hasattr(model, "weight_")
    fitted = LinearRegression(solver="sgd", lr=0.01, random_state=0, max_iter=3, tol=None).fit(X, y)
    fitted.set_params(lr=3.0)
    with pytest.raises(ValueError, match="diverged"):
        for _ in range(5):
            fitted.partial_fit(X, y)
    assert np.isfinite(fitted.coef_).all()


DISTRIBUTED_RANK = textwrap.dedent("""
    import os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import fused_linreg

    rank, path = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = np.load(path)
    rows = slice(0, 700) if rank == 0 else slice(700, None)
    model = fused_linreg.LinearRegression(solver="normal").fit(data["X"][rows], data["y"][rows],
                                                               sample_weight=data["w"][rows])
    np.save(path + f".rank{rank}.npy", np.concatenate([model.coef_.ravel(), model.intercept_]))
    dist.destroy_process_group()
""")


def test_distributed_fit_all_reduces_to_the_one_process_answer(tmp_path):
    X, y = make_regression(n_samples=1500, n_features=8, n_targets=2, noise=2.0, bias=1.0, random_state=6)
    X = X + 20
    w = np.random.default_rng(4).uniform(0, 2, size=1500)
    path = str(tmp_path / "data.npz")
    np.savez(path, X=X, y=y, w=w)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    ranks = [subprocess.Popen([sys.executable, "-c", DISTRIBUTED_RANK, str(rank), path], env=env) for rank in (0, 1)]
    assert [p.wait(timeout=120) for p in ranks] == [0, 0]
    one = LinearRegression(solver="normal").fit(X, y, sample_weight=w)
    expected = np.concatenate([one.coef_.ravel(), one.intercept_])
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(path + f".rank{rank}.npy"), expected, rtol=1e-10, atol=1e-10)


GIGABYTE_FIT = textwrap.dedent("""
    import sys
    import numpy as np
    import fused_linreg
    from memory_probe import peak_extra_mib

    path, n, d, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    X = np.memmap(path, dtype=np.float64, mode="r", shape=(n, d))
    y = np.load(path + ".y.npy")
    model = fused_linreg.LinearRegression(chunk_bytes=chunk)
    model.fit(X[:1000], y[:1000])  # warm-up: libraries, allocator pools
    print(peak_extra_mib(lambda: model.fit(X, y)))
    print(" ".join(repr(float(v)) for v in [*model.coef_, *model.intercept_]))
""")


def test_a_gigabyte_memory_map_fits_exactly_in_one_pass_in_bounded_memory(tmp_path):
    """1 GiB of float64 rows, y an exact linear function of them: one streamed pass of the normal
    equations recovers the coefficients to rounding, with extra memory of a few chunks."""
    n, d, chunk = 2**21, 64, 16 * 2**20
    rng = np.random.default_rng(7)
    coef = rng.standard_normal(d)
    path = str(tmp_path / "X.f64")
    X = np.memmap(path, dtype=np.float64, mode="w+", shape=(n, d))
    y = np.empty(n)
    for start in range(0, n, 2**17):
        rows = rng.standard_normal((2**17, d)) + 3.0
        X[start : start + 2**17] = rows
        y[start : start + 2**17] = rows @ coef - 0.5
    X.flush()
    del X
    np.save(path + ".y.npy", y)
    out = run_probe(GIGABYTE_FIT, path, str(n), str(d), str(chunk), timeout=600).split("\n")
    extra_mib, learned = float(out[0]), np.array([float(v) for v in out[1].split()])
    print(f"{extra_mib:.1f} MiB extra, largest coefficient error {np.abs(learned - [*coef, -0.5]).max():.2e}")
    np.testing.assert_allclose(learned, [*coef, -0.5], rtol=0, atol=1e-9)
    assert extra_mib < 4 * chunk / 2**20 + 8, f"{extra_mib} MiB extra for a 1024 MiB file"
