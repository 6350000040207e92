"""Routers: which task's adapter and head a test sample goes through when the scenario gives no task
label (class- and domain-incremental). A router's ``predict`` returns a task per sample; the model
turns it into a ``Route``, so the adapter layers never know where it came from."""

from cl_adapters.routers.base import Router
from cl_adapters.routers.entropy import EntropyRouter
from cl_adapters.routers.learned import LearnedRouter
from cl_adapters.routers.oracle import OracleRouter
from cl_adapters.routers.prototype import PrototypeRouter

__all__ = ["EntropyRouter", "LearnedRouter", "OracleRouter", "PrototypeRouter", "Router"]
