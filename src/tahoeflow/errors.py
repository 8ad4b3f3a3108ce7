"""Errors raised for bad input. Each message is one line naming the file, row or key."""

from __future__ import annotations


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
