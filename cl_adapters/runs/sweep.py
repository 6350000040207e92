"""The end of a Hydra multirun: the comparison report of its jobs, and the jobs that did not finish.

Registered in ``cl_adapters/conf/config.yaml`` (``hydra.callbacks``), so every sweep ends with
``<sweep dir>/report/`` and a summary line per failed job (exit status 1 if any); a failed job does
not stop the others (``cli.main`` records its error instead of exiting when it runs in a multirun).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from cl_adapters.errors import UserError
from cl_adapters.outputs import report


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs, missing = report.load_runs([sweep])
        print(f"sweep {sweep}: {len(runs)} job(s) complete, {len(missing)} not", file=sys.stderr)
        if runs:
            try:
                report.emit(runs, missing, sweep / "report")
            except UserError as e:  # the sweep dir became unwritable, disk full
                print(f"error: no report: {e}", file=sys.stderr)
                sys.exit(1)
        else:
            print("".join(f"  not included: {m}\n" for m in missing), end="", file=sys.stderr)
        if missing:
            sys.exit(1)  # every job ran and the report is written; the exit status tells a script some failed
