"""test_parallel_real.py - the `parallel-real` suite of upstream.py: process-parallel uses of
real libraries that the Debian-packaged upstream suites do not test literally, run plainly
and under the preload like every upstream suite (outcomes compared test by test).

- scikit-learn's GridSearchCV(n_jobs=2) (joblib's loky workers unpickle the estimator, the
  data and the fold indices the parent sends) gives the same search as n_jobs=1;
- a dask LocalCluster of worker processes (nannies, workers and the client exchange pickled
  tasks and results) computes a task graph, numpy arrays and a dask.array reduction;
- joblib's dask backend on that cluster, and sklearn fitted through it.

Functions shipped to workers are module-level here (pickled by reference, as in real code),
never lambdas (cloudpickle ships those by value, as code: refused under the default policy).
"""
import numpy as np
import pytest


def square(x):
    return x * x


def add(a, b):
    return a + b


def column_means(a):
    return a.mean(axis=0)


def iris():
    from sklearn.datasets import load_iris
    return load_iris(return_X_y=True)


def search(n_jobs, backend=None):
    from joblib import parallel_backend
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = iris()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    g = GridSearchCV(est, {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}, cv=3, n_jobs=n_jobs)
    if backend is None:
        g.fit(X, y)
    else:
        with parallel_backend(backend):
            g.fit(X, y)
    return g


def test_gridsearchcv_n_jobs_2_same_search_as_n_jobs_1():
    one, two = search(1), search(2)
    assert two.best_params_ == one.best_params_
    np.testing.assert_allclose(two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"])
    X, y = iris()
    assert (two.predict(X) == one.predict(X)).all()


def test_gridsearchcv_n_jobs_2_multiprocessing_backend():
    one, two = search(1), search(2, backend="multiprocessing")
    assert two.best_params_ == one.best_params_
    np.testing.assert_allclose(two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"])


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_local_cluster_tasks(client):
    futs = client.map(square, range(10))
    total = client.submit(sum, futs)
    assert total.result(timeout=120) == sum(i * i for i in range(10))
    assert client.submit(add, 2, 3).result(timeout=120) == 5


def test_dask_local_cluster_numpy(client):
    a = np.arange(60000, dtype=np.float64).reshape(-1, 6)
    remote = client.scatter(a)
    np.testing.assert_allclose(client.submit(column_means, remote).result(timeout=120), a.mean(axis=0))
    big = client.submit(np.ones, (1000, 1000)).result(timeout=120)
    assert big.shape == (1000, 1000) and big.sum() == 1e6


def test_dask_array_on_local_cluster(client):
    da = pytest.importorskip("dask.array")
    x = da.arange(100000, chunks=10000).reshape(1000, 100)
    assert float((x ** 2).sum().compute()) == float((np.arange(100000) ** 2).sum())


def test_joblib_dask_backend_gridsearch(client):
    one, two = search(1), search(2, backend="dask")
    assert two.best_params_ == one.best_params_
    np.testing.assert_allclose(two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"])
