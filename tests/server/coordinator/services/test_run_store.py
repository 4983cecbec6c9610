"""The policy a coordinator run trains with: the fleet's, or the run's own."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from apt_core.config import resolve_policy
from server.coordinator import crud
from server.coordinator.core.db import make_session_factory
from server.coordinator.exceptions import NotFoundError
from server.coordinator.services.run_store import OWN_POLICY_VERSION, run_policy_provider

RUN = {
    "task": "digits",
    "method": "apt",
    "clients": 2,
    "fraction": 1.0,
    "rounds": 3,
    "alpha": 0.5,
    "seed": 0,
}


def test_run_policy_provider_own_policy_pinned_without_overrides(
    db: Session, engine: Engine
) -> None:
    # Prepare: a fleet version 2 with a class override exists
    crud.create_policy_version(
        session=db,
        policy=resolve_policy("accurate"),
        overrides={"mcu": {"bits_max": 8}},
        author="alice",
    )
    run = crud.create_run(session=db, **RUN, policy="aggressive")
    db.commit()

    # Execute
    provider = run_policy_provider(make_session_factory(engine), run.id)

    # Assert: the run's policy as given, every round, whatever the fleet's version says
    assert provider() == (OWN_POLICY_VERSION, resolve_policy("aggressive"), {})


def test_run_policy_provider_without_policy_follows_fleet(db: Session, engine: Engine) -> None:
    # Prepare
    run = crud.create_run(session=db, **RUN)
    db.commit()
    provider = run_policy_provider(make_session_factory(engine), run.id)
    crud.create_policy_version(
        session=db,
        policy=resolve_policy("accurate"),
        overrides={"mcu": {"bits_max": 8}},
        author="alice",
    )
    db.commit()

    # Execute
    version, policy, overrides = provider()

    # Assert: a version stored after the run started reaches it
    assert (version, policy, overrides) == (2, resolve_policy("accurate"), {"mcu": {"bits_max": 8}})


def test_run_policy_provider_unknown_run_not_found(engine: Engine, db: Session) -> None:
    # Execute / Assert
    with pytest.raises(NotFoundError, match="Run 999999 not found"):
        run_policy_provider(make_session_factory(engine), 999_999)
