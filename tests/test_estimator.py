"""fused_linreg.LinearRegression as a scikit-learn estimator: sklearn's check_estimator, the
closed-form least squares (sklearn.linear_model.LinearRegression) as the reference, clone,
Pipeline, cross_val_score, GridSearchCV, pickling, input and output types, the stopping rule,
divergence, streaming a memory map in bounded memory, and import without scikit-learn."""

import functools
import pickle
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LinearRegression as ClosedForm
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import fused_linreg
from fused_linreg import estimator as estimator_module
from fused_linreg.d2l import synthetic_data

from memory_probe import run_probe

LinearRegression = fused_linreg.LinearRegression
# The tests of the SGD solver's behaviour (the defaults pick the normal equations at these sizes).
SGD = functools.partial(LinearRegression, solver="sgd")


@pytest.fixture
def book_data():
    """The book's synthetic data, 1000 x 2 float32 tensors, seeded without touching the global generator."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return synthetic_data(torch.tensor([2, -3.4]), 4.2, 1000)


def standardised_diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def regression_data(n=400, d=5, k=1, seed=0):
    """float64 numpy X (n, d) and y (n,) or (n, k) with noise."""
    X, y = make_regression(n_samples=n, n_features=d, n_targets=k, noise=5.0, bias=3.0, random_state=seed)
    return X, y


def test_check_estimator_passes_every_check():
    failed = [(r["check_name"], repr(r["exception"])) for r in check_estimator(LinearRegression(), on_fail=None)
              if r["status"] == "failed"]
    assert failed == []


@pytest.mark.parametrize("name", ["diabetes", "make_regression"])
def test_defaults_reach_the_closed_form_r2_within_one_percent(name):
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    else:
        X, y = make_regression(n_samples=1000, n_features=20, noise=10.0, random_state=0)
    closed = make_pipeline(StandardScaler(), ClosedForm()).fit(X, y).score(X, y)
    for seed in range(3):
        ours = make_pipeline(StandardScaler(), SGD(random_state=seed)).fit(X, y)
        assert ours[-1].n_iter_ < ours[-1].max_iter, "the stopping rule ended training"
        assert ours.score(X, y) >= 0.99 * closed


def test_fits_the_book_data_like_least_squares(book_data, device):
    X, y = book_data
    closed = ClosedForm().fit(X.numpy(), y.numpy().ravel())
    model = SGD(tol=1e-6, random_state=0, device=device)  # the loss is about 5e-5 here
    assert model.fit(X.to(device), y.to(device)) is model
    assert model.weight_.device.type == device and model.weight_.dtype == torch.float32
    assert model.coef_.shape == (1, 2) and model.intercept_.shape == (1,) and model.coef_.dtype == np.float32
    np.testing.assert_allclose(model.coef_[0], closed.coef_, atol=3e-3)
    np.testing.assert_allclose(model.intercept_, closed.intercept_, atol=3e-3)
    predicted = model.predict(X.to(device))
    assert isinstance(predicted, torch.Tensor) and predicted.shape == (1000, 1) and predicted.device.type == device
    assert model.score(X, y) == pytest.approx(closed.score(X.numpy(), y.numpy().ravel()), abs=1e-5)
    assert model.n_iter_ == len(model.loss_curve_) < model.max_iter


def test_multi_output_with_momentum_matches_the_closed_form():
    X, y = regression_data(n=2000, d=6, k=3)
    closed = ClosedForm().fit(X, y)
    model = SGD(lr=0.002, momentum=0.9, random_state=1).fit(X, y)
    assert model.coef_.shape == (3, 6) and model.intercept_.shape == (3,) and model.coef_.dtype == np.float64
    scale = np.abs(closed.coef_).max()
    np.testing.assert_allclose(model.coef_, closed.coef_, rtol=0, atol=1e-3 * scale)
    np.testing.assert_allclose(model.intercept_, closed.intercept_, rtol=0, atol=1e-3 * scale)
    assert model.predict(X).shape == (2000, 3)
    assert model.score(X, y) == pytest.approx(r2_score(y, model.predict(X)), abs=1e-12)
    assert model.score(X, y) == pytest.approx(closed.score(X, y), abs=1e-4)


def test_partial_fit_continues_where_fit_stopped(book_data):
    """fit(max_iter=1) then two partial_fit epochs draw the same random numbers as fit(max_iter=3)
    and keep the momentum buffers: the results are bitwise identical."""
    X, y = book_data
    whole = SGD(momentum=0.5, max_iter=3, tol=None, random_state=3).fit(X, y)
    stepwise = SGD(momentum=0.5, max_iter=1, tol=None, random_state=3).fit(X, y)
    stepwise.partial_fit(X, y).partial_fit(X, y)
    assert torch.equal(stepwise.weight_, whole.weight_) and torch.equal(stepwise.bias_, whole.bias_)
    assert stepwise.loss_curve_ == whole.loss_curve_ and stepwise.n_iter_ == 1
    fresh = SGD(random_state=3).partial_fit(X, y)
    assert fresh.n_iter_ == 1 and len(fresh.loss_curve_) == 1


def test_warm_start_continues_and_fit_restarts(book_data):
    X, y = book_data
    cold = SGD(max_iter=2, tol=None, random_state=4)
    first = cold.fit(X, y).weight_.clone()
    assert torch.equal(cold.fit(X, y).weight_, first) and len(cold.loss_curve_) == 2
    warm = SGD(max_iter=2, tol=None, random_state=4, warm_start=True).fit(X, y)
    warm.fit(X, y)
    four = SGD(max_iter=4, tol=None, random_state=4).fit(X, y)
    assert torch.equal(warm.weight_, four.weight_) and warm.loss_curve_ == four.loss_curve_[2:]


def test_random_state_none_draws_from_numpy_and_leaves_torch_alone(book_data):
    X, y = book_data
    torch_state = torch.get_rng_state()
    np.random.seed(5)
    a = SGD(max_iter=1, tol=None).fit(X, y).coef_
    np.random.seed(5)
    b = SGD(max_iter=1, tol=None).fit(X, y).coef_
    c = SGD(max_iter=1, tol=None, random_state=np.random.RandomState(5)).fit(X, y).coef_
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numpy_output_follows_x_and_float64_trains_in_float64(dtype, order):
    X, y = regression_data()
    X = np.asarray(X, dtype=dtype, order=order)
    model = SGD(random_state=0).fit(X, y)
    assert model.weight_.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    predicted = model.predict(X)
    assert type(predicted) is np.ndarray and predicted.dtype == dtype and predicted.shape == (400,)
    other = X.astype(np.float32 if dtype == np.float64 else np.float64)
    assert model.predict(other).dtype == other.dtype
    residual = predicted - y
    assert type(residual) is np.ndarray


def test_dtype_and_device_override_the_input(book_data):
    X, y = regression_data()
    model = SGD(dtype=torch.float32, device="cpu", random_state=0).fit(X, y)
    assert model.weight_.dtype == torch.float32 and model.predict(X).dtype == np.float64
    tensor_model = SGD(random_state=0).fit(*book_data)
    prediction = tensor_model.predict(book_data[0].double())
    assert prediction.dtype == torch.float64


def test_pandas_and_lists():
    X, y = regression_data(n=200, d=3)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = SGD(random_state=0).fit(frame, pd.Series(y))
    assert list(model.feature_names_in_) == ["a", "b", "c"] and model.n_features_in_ == 3
    assert model.predict(frame).dtype == np.float64 and model.score(frame, pd.Series(y)) > 0.99
    with pytest.warns(UserWarning, match="feature names"):
        model.predict(X)
    listed = SGD(random_state=0).fit(X.tolist(), y.tolist())
    assert not hasattr(listed, "feature_names_in_")
    np.testing.assert_allclose(listed.predict(X.tolist()), model.predict(frame))


def test_a_c_contiguous_array_of_the_training_dtype_is_not_copied(monkeypatch):
    X, y = regression_data()
    seen = []

    def spy(X_t, *args, **kwargs):
        seen.append(X_t.data_ptr())
        return fused_linreg.linreg_epoch_(X_t, *args, **kwargs)

    monkeypatch.setattr(estimator_module, "linreg_epoch_", spy)
    SGD(max_iter=2, tol=None).fit(X, y)
    assert seen == [X.ctypes.data] * 2
    tensor = torch.from_numpy(X)
    seen.clear()
    SGD(max_iter=1, tol=None).fit(tensor, y)
    assert seen == [tensor.data_ptr()]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["X", "y"])
@pytest.mark.parametrize("kind", ["numpy", "tensor", "memmap"])
def test_nan_or_inf_in_x_or_y_raises_value_error(bad, where, kind, tmp_path):
    """One bad value: fit raises (X is checked by the training itself, see _InMemory) and leaves
    the model unfitted; partial_fit raises and leaves a fitted model as it was."""
    X, y = regression_data(n=100)
    if where == "X":
        X[73, 2] = bad
    else:
        y[73] = bad
    if kind == "tensor":
        X, y = torch.from_numpy(X), torch.from_numpy(y)
    elif kind == "memmap":
        mapped = np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="w+", shape=X.shape)
        mapped[:] = X
        X = mapped
    model = SGD()
    with pytest.raises(ValueError, match=f"Input ({where}|X or y) contains (NaN|inf)"):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        model.predict(X)
    good_X, good_y = regression_data(n=100)
    model.fit(good_X, good_y)
    coef = model.coef_.copy()
    with pytest.raises(ValueError, match="contains (NaN|inf)"):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(model.coef_, coef)


def test_sparse_input_raises_a_clear_error():
    X, y = regression_data(n=50)
    with pytest.raises(TypeError, match="[Ss]parse"):
        SGD().fit(scipy.sparse.csr_matrix(X), y)
    with pytest.raises(TypeError, match="sparse X is not supported"):
        SGD().fit(torch.from_numpy(X).to_sparse(), y)


def test_divergence_raises_and_leaves_the_estimator_unfitted():
    X, y = load_diabetes(return_X_y=True)
    model = SGD(lr=1.0)
    with pytest.raises(ValueError, match=r"diverged.*lr=1\.0.*StandardScaler.*lower lr"):
        model.fit(X * 100, y)
    assert not hasattr(model, "weight_")
    with pytest.raises(NotFittedError):
        model.predict(X)
    fitted = SGD(random_state=0).fit(*standardised_diabetes())
    coef = fitted.coef_
    with pytest.raises(ValueError, match="diverged"):
        fitted.set_params(lr=1.0).partial_fit(X * 1e100, y)  # overflows in the first step
    np.testing.assert_array_equal(fitted.coef_, coef)


def test_max_iter_without_convergence_warns():
    X, y = standardised_diabetes()
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        SGD(max_iter=2).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = SGD(max_iter=2, tol=None).fit(X, y)
    assert model.n_iter_ == 2


def test_clone_pipeline_cross_val_score_and_grid_search():
    X, y = load_diabetes(return_X_y=True)
    model = SGD(lr=0.02, random_state=0)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    pipeline = make_pipeline(StandardScaler(), SGD(random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    closed = cross_val_score(make_pipeline(StandardScaler(), ClosedForm()), X, y, cv=3)
    np.testing.assert_allclose(scores, closed, atol=0.03)
    grid = GridSearchCV(pipeline, {"linearregression__lr": [0.003, 0.03], "linearregression__batch_size": [16, 64]},
                        cv=3, n_jobs=2).fit(X, y)
    assert grid.best_score_ == pytest.approx(closed.mean(), abs=0.03)
    assert isinstance(grid.best_estimator_[-1], LinearRegression)


def test_pickle_keeps_the_predictions_and_the_training_state(book_data):
    X, y = book_data
    model = SGD(momentum=0.9, random_state=0, max_iter=2, tol=None).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(restored.predict(X), model.predict(X), rtol=0, atol=0)
    restored.partial_fit(X, y)
    model.partial_fit(X, y)
    assert torch.equal(restored.weight_, model.weight_)


@pytest.mark.parametrize(("params", "error", "match"), [
    (dict(lr="0.1"), TypeError, "lr must be a number, got str"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number > 0"),
    (dict(momentum=-0.1), ValueError, "momentum must be a finite number >= 0"),
    (dict(weight_decay=-1), ValueError, "weight_decay must be a finite number >= 0"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an int, got float"),
    (dict(max_iter=0), ValueError, "max_iter must be an integer >= 1"),
    (dict(n_iter_no_change=0), ValueError, "n_iter_no_change must be an integer >= 1"),
    (dict(tol="small"), TypeError, "tol must be a number"),
    (dict(shuffle=1), TypeError, "shuffle must be a bool"),
    (dict(random_state="0"), TypeError, "random_state must be None, an int or a numpy.random.RandomState"),
    (dict(dtype=torch.int64), ValueError, "dtype must be None or a floating-point torch.dtype"),
    (dict(device=0), TypeError, "device must be a str, torch.device or None"),
    (dict(chunk_bytes=0), ValueError, "chunk_bytes must be an integer >= 1"),
])
def test_bad_hyperparameters_raise_at_fit_naming_the_argument(params, error, match):
    X, y = regression_data(n=20)
    model = LinearRegression(**params)  # __init__ only stores
    with pytest.raises(error, match=rf"^fused_linreg\.LinearRegression: {match}"):
        model.fit(X, y)


def test_progress_bar(book_data, monkeypatch):
    X, y = book_data
    calls = []

    class FakeTqdm:
        def __init__(self, total, **kwargs):
            calls.append(("total", total))

        def update(self, n):
            calls.append(("update", n))

        def set_postfix(self, **kwargs):
            calls.append(("loss", kwargs["loss"]))

        def close(self):
            calls.append(("close", None))

    package, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", package)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    model = SGD(max_iter=2, tol=None, progress=True).fit(X, y)
    assert calls == [("total", 2), *[c for loss in model.loss_curve_ for c in (("update", 1), ("loss", f"{loss:.6g}"))],
                     ("close", None)]


def test_progress_without_tqdm_says_how_to_get_it(book_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"pip install 'fused-linreg\[progress\]'"):
        SGD(progress=True).fit(*book_data)


def test_wrong_number_of_features_or_rows_raises(book_data):
    X, y = book_data
    model = SGD(max_iter=1, tol=None).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but LinearRegression is expecting 2 features"):
        model.predict(torch.cat([X, X[:, :1]], dim=1))
    with pytest.raises(ValueError, match=r"y must have shape \(1000,\) or \(1000, n_outputs\) to match X"):
        model.partial_fit(X, y[:999])


def write_memmap(path, X):
    mapped = np.memmap(path, dtype=X.dtype, mode="w+", shape=X.shape)
    mapped[:] = X
    mapped.flush()
    return np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)


def test_memmap_in_one_chunk_trains_exactly_as_in_memory(tmp_path):
    X, y = regression_data(k=2)
    mapped = write_memmap(tmp_path / "X.dat", X)
    streamed = SGD(momentum=0.5, random_state=0).fit(mapped, y)
    in_memory = SGD(momentum=0.5, random_state=0).fit(X, y)
    assert torch.equal(streamed.weight_, in_memory.weight_) and streamed.loss_curve_ == in_memory.loss_curve_
    np.testing.assert_array_equal(streamed.predict(mapped), in_memory.predict(X))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_memmap_in_many_chunks_matches_the_closed_form(dtype, tmp_path):
    X, y = regression_data(n=5000, d=8)
    mapped = write_memmap(tmp_path / "X.dat", X.astype(dtype))
    model = SGD(random_state=0, dtype=torch.float64, chunk_bytes=64 * 8 * 8)  # 64 rows a chunk
    model.fit(mapped, y)
    assert model.score(mapped, y) == pytest.approx(ClosedForm().fit(X, y).score(X, y), abs=1e-3)
    np.testing.assert_allclose(model.predict(mapped), model.predict(X.astype(dtype)), rtol=1e-12)


MEMORY_PROBE = textwrap.dedent("""
    import sys
    import numpy as np, torch, fused_linreg
    from memory_probe import peak_extra_mib

    path, n, d, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    y = np.random.default_rng(0).standard_normal(n)
    for dtype in (np.float64, np.float32):
        X = np.memmap(path + dtype.__name__, dtype=dtype, mode="r", shape=(n, d))
        for solver in ("sgd", "normal"):
            model = fused_linreg.LinearRegression(solver=solver, dtype=torch.float64, chunk_bytes=chunk, max_iter=2,
                                                  tol=None)
            model.fit(X[:1000], y[:1000])  # warm-up: libraries, allocator pools
            print(dtype.__name__ + "-" + solver, peak_extra_mib(lambda: model.fit(X, y)))
    X = np.memmap(path + "float64", dtype=np.float64, mode="r", shape=(n, d))
    print("copy", peak_extra_mib(lambda: np.array(X)))
""")


def test_memmap_fit_streams_in_bounded_memory(tmp_path):
    """A 48 MiB file (float64; 24 MiB as float32) fitted in 2 MiB chunks by either solver: the extra anonymous
    memory (not the file's page cache) stays within a few chunks, while a copy of the file
    (the control) shows up in full."""
    n, d, chunk = 200_000, 30, 2 * 2**20
    rng = np.random.default_rng(1)
    for dtype in (np.float64, np.float32):
        mapped = np.memmap(tmp_path / f"X.{dtype.__name__}", dtype=dtype, mode="w+", shape=(n, d))
        for start in range(0, n, 20_000):
            mapped[start : start + 20_000] = rng.standard_normal((20_000, d))
        mapped.flush()
        del mapped
    out = run_probe(MEMORY_PROBE, str(tmp_path / "X."), str(n), str(d), str(chunk))
    peaks = dict(line.split() for line in out.splitlines())
    print(peaks)
    file_mib = n * d * 8 / 2**20
    assert float(peaks["copy"]) > 0.9 * file_mib, "the probe sees a copy of the file"
    for run in ("float64-sgd", "float32-sgd", "float64-normal", "float32-normal"):
        assert float(peaks[run]) < 4 * chunk / 2**20 + 4, f"{run}: {peaks[run]} MiB extra for a {file_mib} MiB file"


def test_import_and_use_without_scikit_learn():
    """With sklearn hidden, `import fused_linreg` works and the estimator still fits numpy data,
    with get_params/set_params/repr from the fallback base class."""
    script = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # import sklearn raises ImportError
        import numpy as np, fused_linreg
        X = np.random.default_rng(0).standard_normal((200, 3))
        y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
        model = fused_linreg.LinearRegression(lr=0.05, random_state=0)
        assert model.get_params()["lr"] == 0.05 and repr(model) == "LinearRegression(lr=0.05, random_state=0)"
        model.set_params(batch_size=16).fit(X, y)
        assert model.score(X, y) > 0.999 and model.predict(X).dtype == np.float64
        try:
            model.fit(np.full((3, 3), np.nan), [1, 2, 3])
        except ValueError as error:
            assert "NaN" in str(error)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.cuda
def test_cuda_memmap_streams_through_pinned_buffers_like_the_cpu(tmp_path):
    X, y = regression_data(n=5000, d=8)
    mapped = write_memmap(tmp_path / "X.dat", X)
    params = dict(random_state=0, shuffle=False, max_iter=3, tol=None, chunk_bytes=64 * 8 * 8)
    on_gpu = SGD(device="cuda", **params).fit(mapped, y)
    on_cpu = SGD(**params).fit(mapped, y)
    assert on_gpu.weight_.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.coef_, on_cpu.coef_, rtol=1e-10)
    np.testing.assert_allclose(on_gpu.loss_curve_, on_cpu.loss_curve_, rtol=1e-10)
    shuffled = SGD(device="cuda", random_state=0, chunk_bytes=64 * 8 * 8).fit(mapped, y)
    assert shuffled.score(mapped, y) == pytest.approx(ClosedForm().fit(X, y).score(X, y), abs=1e-3)
    assert isinstance(shuffled.predict(mapped), np.ndarray)
    assert shuffled.predict(torch.from_numpy(X).cuda()).device.type == "cuda"


def test_bench_fit_rows_agree_with_sgd_regressor_on_r2():
    """The book suite's estimator-fit rows compare equal work: 3 epochs of ours and of
    SGDRegressor(max_iter=3, tol=None) reach the same R² (within 1e-3), as the closed form."""
    from sklearn.linear_model import SGDRegressor

    from fused_linreg.bench.suites import estimator_data

    X, y = estimator_data(20_000, 50)
    ours = SGD(max_iter=3, tol=None, random_state=0).fit(X, y).score(X, y)
    sgd = SGDRegressor(max_iter=3, tol=None, random_state=0).fit(X, y).score(X, y)
    assert ours == pytest.approx(sgd, abs=1e-3)
    assert ours == pytest.approx(ClosedForm().fit(X, y).score(X, y), abs=1e-3)


def test_score_with_another_number_of_outputs_raises_like_scikit_learn():
    """r2_score refuses y_true and y_pred with different output counts; so does score."""
    X, y = make_regression(n_samples=200, n_features=4, n_targets=2, random_state=0)
    model = SGD(max_iter=5).fit(X, y)
    with pytest.raises(ValueError, match=r"different number of output \(1!=2\)"):
        model.score(X, y[:, 0])
    with pytest.raises(ValueError, match=r"different number of output \(3!=2\)"):
        model.score(X, np.hstack([y, y[:, :1]]))
