"""Load benchmark of the coordinator: read latency at a fixed request rate during training.

``aptfleet load`` (or ``python -m server.cli.load``, same flags) starts a real coordinator
(:mod:`server.cli.service`) on a temporary SQLite database, creates an operator token, and
trains simulated runs (POST /runs, Flower simulation engine) with and without an open-loop
read load on GET /runs, /runs/{id}, /runs/{id}/rounds, /runs/{id}/precision and /devices.
Only 127.0.0.1 is contacted; requests, duration and every wait are bounded, and the
command stops by itself. It writes ``load.json``, ``load.md`` and ``load.png`` to
``--out`` (default docs/results)::

    aptfleet load --rate 100 --duration 60 --idle-duration 20

- :mod:`.benchmark`: the phases and the result;
- :mod:`.traffic`: the open-loop load and the burst;
- :mod:`.runs`: the training runs and their round times;
- :mod:`.probes`: CPU time, pool timeouts, health of the service;
- :mod:`.stats`, :mod:`.report`, :mod:`.plot`: figures, load.md, load.png;
- :mod:`.command`: the command line.
"""
