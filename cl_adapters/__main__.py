"""``python -m cl_adapters ...`` is the ``cl-adapters`` command."""

from cl_adapters.runs.cli import cli

cli()
