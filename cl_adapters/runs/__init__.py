"""A run's orchestration: the command (``cli``), one run (``run``), its references, checkpoint chain and
resume, the run dir's lock, the sweep's end, and loading a finished run (``inference``)."""
