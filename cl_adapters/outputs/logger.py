"""The logger interface: what a run calls on each ``logger.<name>`` it builds."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Logger(ABC):
    """A run's loggers mirror ``results`` (the run record, as written to results.json) as it grows: after each
    task, at the end, and when the run fails. The shipped loggers subclass it; a logger of yours needs these
    three methods (the run refuses one without them before training, naming what it lacks), and subclassing
    gives it ``log_failure``'s default. A logger must not raise: results.json, not the logger, is the record."""

    @abstractmethod
    def log_task(self, task: int, results: dict) -> None:
        """After ``task`` is trained, evaluated and results.json written (``accuracy_matrix[task]`` filled)."""

    @abstractmethod
    def log_summary(self, results: dict) -> None:
        """After the last task, with ``metrics`` final."""

    def log_failure(self, results: dict) -> None:
        """The run failed or was interrupted (``results["run"]`` says how); by default nothing to add."""
