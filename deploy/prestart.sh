#!/usr/bin/env bash
# Prestart of the aptfleet stack (the `migrate` service): wait for the database, migrate
# it to the newest schema (Alembic upgrade head), seed policy version 1 if missing.
# Reads APTFLEET_DATABASE_URL like every aptfleet command; idempotent, so it may run on
# every `docker compose up`. Never prints the URL: it carries the database password.
set -euo pipefail

wait_seconds="${APTFLEET_DB_WAIT_SECONDS:-60}"

python - "$wait_seconds" <<'PY'
import sys
import time

from server.coordinator.core.config import settings
from server.coordinator.core.db import check_db, make_engine

timeout = float(sys.argv[1])
engine = make_engine(settings.DATABASE_URL)
deadline = time.monotonic() + timeout
try:
    while not check_db(engine):
        if time.monotonic() > deadline:
            sys.exit(f"prestart: the database did not answer within {timeout:.0f} s "
                     "(APTFLEET_DATABASE_URL, APTFLEET_DB_WAIT_SECONDS).")
        time.sleep(1.0)
finally:
    engine.dispose()
print("prestart: database reachable", file=sys.stderr)
PY

# Alembic upgrade head, then the seed (policy version 1 when the table is empty).
aptfleet db upgrade
