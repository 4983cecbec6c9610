"""A real coordinator process (``aptfleet serve``) for end-to-end tests.

It is the package's harness (:mod:`server.cli.service`), which the load tool uses too.
"""

from server.cli.service import Coordinator, ServiceError, kill_run_jobs, run_job_pids, wait_for

__all__ = ["Coordinator", "ServiceError", "kill_run_jobs", "run_job_pids", "wait_for"]
