"""scikit-learn's base classes and exceptions, or small stand-ins when it is not installed.

scikit-learn is optional: with it the estimator is a ``RegressorMixin, BaseEstimator``
validated by sklearn's own ``validate_data`` (so ``clone``, ``Pipeline``, ``GridSearchCV`` and
``check_estimator`` work); without it the stand-ins give ``get_params``/``set_params``/``repr``
and the input is validated by ``_estimator_input``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["BaseEstimator", "ConvergenceWarning", "NotFittedError", "RegressorMixin", "check_sample_weight",
           "validate_data"]

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.utils.validation import _check_sample_weight as check_sample_weight
    from sklearn.utils.validation import validate_data
except ImportError:
    validate_data = None
    check_sample_weight = None

    class ConvergenceWarning(UserWarning):  # type: ignore[no-redef]
        """Training stopped at ``max_iter`` before the stopping rule was met (sklearn's, when installed)."""

    class NotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before ``fit`` (sklearn's, when installed)."""

    class RegressorMixin:  # type: ignore[no-redef]
        """Stands in for sklearn's mixin; ``score`` is the estimator's own."""

    class BaseEstimator:  # type: ignore[no-redef]
        """``get_params``, ``set_params`` and ``repr`` as scikit-learn's ``BaseEstimator`` gives them."""

        @classmethod
        def _param_names(cls) -> list[str]:
            return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                    if p.kind == inspect.Parameter.KEYWORD_ONLY]

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._param_names()}

        def set_params(self, **params: Any) -> BaseEstimator:
            valid = self._param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                                     f"Valid parameters are: {valid}.")
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            defaults = inspect.signature(type(self).__init__).parameters
            changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                       if value is not defaults[name].default and value != defaults[name].default]
            return f"{type(self).__name__}({', '.join(changed)})"
