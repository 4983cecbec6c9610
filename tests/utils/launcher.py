"""A run launcher that records what the API asked of it."""

from __future__ import annotations


class RecordingLauncher:
    """Remembers started and stopped run ids; optionally fails on start."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.started: list[int] = []
        self.stopped: list[int] = []
        self.fail_with = fail_with

    def start(self, run_id: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append(run_id)

    def stop(self, run_id: int) -> None:
        self.stopped.append(run_id)
