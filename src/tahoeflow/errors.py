"""Errors raised for bad input. Each message is one line naming the file, row or key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """Bad input data: the message names the file, the row (0-based, within the file) and the problem."""

    def __init__(self, path: object, problem: str, row: int | None = None) -> None:
        where = f"{path}" if row is None else f"{path}, row {row}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.row = row
        self.problem = problem


class ConfigError(ValueError):
    """Bad configuration: the message names the config key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}': {problem}")
        self.key = key
        self.problem = problem


class ArgumentError(ValueError):
    """A library function's argument is invalid: ``argument`` names the parameter.

    The library never names config keys; a workflow script that knows which key fed which
    argument turns this into a :class:`ConfigError` with :func:`config_keys`.
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"argument '{argument}': {problem}")
        self.argument = argument
        self.problem = problem


@contextmanager
def config_keys(**keys: str) -> Iterator[None]:
    """Name the config key behind an argument: an :class:`ArgumentError` about ``arg`` raised
    inside the block becomes a :class:`ConfigError` about ``keys[arg]``.

    ``with config_keys(cv_folds="models.cv_folds"): fit_ridge(..., cv_folds=p.cv_folds)``
    """
    try:
        yield
    except ArgumentError as e:
        if e.argument not in keys:
            raise
        raise ConfigError(keys[e.argument], e.problem) from None
