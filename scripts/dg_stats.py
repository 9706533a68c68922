"""Small statistics for scripts/measure_dual_glow.py, on numpy and scipy only.

scikit-learn is not a dependency of the project; these few lines replace what the
measurements need from it:

* ``spearman``: Spearman's rank correlation (scipy.stats.spearmanr).
* ``kfold_ridge_r2``: out-of-sample R^2 of ridge regression, the penalty chosen inside
  each training fold by the closed-form leave-one-out error (nested cross-validation).
* ``ridge_r2``: R^2 on a test set of ridge regression fitted on a training set (penalty
  by the training set's leave-one-out error); ``r2``: 1 - SSE/SST.
* ``svm_fit`` / ``svm_predict``: a soft-margin RBF-kernel SVM solved in its dual with
  L-BFGS-B under the box constraints 0 <= alpha <= C. The bias is absorbed into the
  kernel (K + 1), which removes the dual's equality constraint; otherwise it is the
  usual C-SVM. ``loo_svm_accuracy``: its leave-one-out accuracy with per-fold
  standardisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

RIDGE_PENALTIES = np.logspace(-3, 4, 15)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(x, y).statistic)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0), train.std(0) + 1e-8
    return (train - mu) / sd, (test - mu) / sd


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of ridge regression (intercept unpenalised)."""
    x_mean, y_mean = x.mean(0), y.mean()
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    w = vt.T @ ((s / (s**2 + penalty)) * (u.T @ (y - y_mean)))
    return w, float(y_mean - x_mean @ w)


def _loo_error(x: np.ndarray, y: np.ndarray, penalty: float) -> float:
    """Mean squared leave-one-out error of ridge (closed form: r_i / (1 - h_ii))."""
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    yc = y - y.mean()
    shrink = s**2 / (s**2 + penalty)
    fitted = u @ (shrink * (u.T @ yc))
    hat = (u**2 @ shrink) + 1.0 / len(y)  # the intercept adds 1/n to every leverage
    return float(np.mean(((yc - fitted) / (1.0 - hat)) ** 2))


def kfold_ridge_r2(x: np.ndarray, y: np.ndarray, folds: int = 5, repeats: int = 20,
                   seed: int = 0) -> float:
    """Mean over repeats of 1 - SSE/SST of out-of-fold ridge predictions (nested CV)."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        order = rng.permutation(len(y))
        pred = np.empty_like(y, dtype=np.float64)
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(order, fold)
            xt, xv = _standardise(x[train], x[fold])
            penalty = min(RIDGE_PENALTIES, key=lambda p: _loo_error(xt, y[train], p))
            w, b = _ridge(xt, y[train], penalty)
            pred[fold] = xv @ w + b
        scores.append(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
    return float(np.mean(scores))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Out-of-sample coefficient of determination (negative: worse than the mean)."""
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray) -> float:
    """Fit ridge on the training set (standardised, penalty by LOO), R^2 on the test set."""
    xt, xv = _standardise(x_train, x_test)
    penalty = min(RIDGE_PENALTIES, key=lambda p: _loo_error(xt, y_train, p))
    w, b = _ridge(xt, y_train, penalty)
    return r2(y_test, xv @ w + b)


@dataclass
class SVM:
    support: np.ndarray
    coef: np.ndarray  # alpha_i * y_i
    gamma: float


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-gamma * np.maximum(sq, 0.0))


def svm_fit(x: np.ndarray, y: np.ndarray, c: float = 1.0, gamma: float | None = None) -> SVM:
    """Soft-margin RBF SVM; ``y`` in {-1, +1}; gamma defaults to 1 / n_features."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    q = (y[:, None] * y[None, :]) * (_rbf(x, x, gamma) + 1.0)

    def dual(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        qa = q @ alpha
        return 0.5 * alpha @ qa - alpha.sum(), qa - 1.0

    res = optimize.minimize(dual, np.zeros(len(y)), jac=True, method="L-BFGS-B",
                            bounds=[(0.0, c)] * len(y), options={"maxiter": 5000, "gtol": 1e-10})
    return SVM(x, res.x * y, gamma)


def svm_predict(model: SVM, x: np.ndarray) -> np.ndarray:
    score = (_rbf(x, model.support, model.gamma) + 1.0) @ model.coef
    return np.where(score >= 0, 1.0, -1.0)


def loo_svm_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    hits = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        xt, xv = _standardise(x[keep], x[i : i + 1])
        hits += int(svm_predict(svm_fit(xt, y[keep]), xv)[0] == y[i])
    return hits / len(y)
