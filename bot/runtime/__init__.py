"""The composition root and the programs around it: the runtime that wires adapters to the
core, the `switchboard` command, the RQ jobs and the worker pool. The core (the rest of
``bot/``) never imports from here."""
