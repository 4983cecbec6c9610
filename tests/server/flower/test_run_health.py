"""A run fails loudly: no aggregated reply in a round, or mostly failed devices over the run."""

from __future__ import annotations

import dataclasses

import pytest

from server.flower.records import ClientReport, RoundReport
from server.flower.run_health import RunFailed, RunHealth
from server.flower.settings import ServerSettings
from tests.utils.run import make_round_record


def _round(round_: int, ok: int, failed: int, rejected: int = 0) -> RoundReport:
    """A round of ``ok`` trained replies, ``failed`` failures and ``rejected`` rejections."""
    base = make_round_record(round_, nodes=range(1, ok + 1))
    bad = [
        ClientReport(node_id=100 + i, failure="The device returned an error: out of memory")
        for i in range(failed)
    ] + [
        ClientReport(node_id=200 + i, rejected="Metric 'num-examples' = 0: no data")
        for i in range(rejected)
    ]
    return dataclasses.replace(
        base,
        clients=(base.clients if ok else []) + bad,
        participants=ok,
        failures=failed,
        rejections=rejected,
    )


def test_run_health_round_without_aggregated_reply_fails_run_with_reasons() -> None:
    # Prepare
    health = RunHealth(max_failure_share=0.5)
    health.observe(_round(1, ok=3, failed=0))

    # Execute / Assert
    with pytest.raises(RunFailed, match="Round 2: no reply was aggregated") as info:
        health.observe(_round(2, ok=0, failed=2, rejected=1))
    assert "(3 sampled: 2 failed, 1 rejected)" in str(info.value)
    assert info.value.reasons == [
        "failed: The device returned an error: out of memory (2x)",
        "rejected: Metric 'num-examples' = 0: no data (1x)",
    ]


def test_run_health_partial_failure_survives() -> None:
    # Prepare
    health = RunHealth(max_failure_share=0.5)

    # Execute: 2 of 6 replies failed
    health.observe(_round(1, ok=2, failed=1))
    health.observe(_round(2, ok=2, failed=1))
    health.check_run()

    # Assert
    assert (health.sampled, health.unsuccessful) == (6, 2)


def test_run_health_mostly_failed_run_fails_at_end() -> None:
    # Prepare: 4 of 6 replies failed or were rejected, every round aggregated one
    health = RunHealth(max_failure_share=0.5)
    health.observe(_round(1, ok=1, failed=2))
    health.observe(_round(2, ok=1, failed=1, rejected=1))

    # Execute / Assert
    with pytest.raises(RunFailed, match=r"4 of the run's 6 sampled replies \(67%\)") as info:
        health.check_run()
    assert "max-failure-share 50%" in str(info.value)
    assert "out of memory (3x)" in str(info.value)


def test_run_health_share_at_threshold_passes() -> None:
    # Prepare: exactly half
    health = RunHealth(max_failure_share=0.5)
    health.observe(_round(1, ok=2, failed=2))

    # Execute / Assert: no exception
    health.check_run()


def test_run_health_recorder_records_round_before_failing() -> None:
    # Prepare
    stored: list[RoundReport] = []
    record = RunHealth(max_failure_share=0.5).recorder(stored.append)

    # Execute
    with pytest.raises(RunFailed):
        record(_round(1, ok=0, failed=3))

    # Assert: the failed round is on record
    assert [r.round for r in stored] == [1]


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_run_health_invalid_share_names_field(share: float) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=f"max_failure_share={share}"):
        RunHealth(max_failure_share=share)


def test_server_settings_max_failure_share_in_run_config() -> None:
    # Prepare
    settings = ServerSettings(max_failure_share=0.25)

    # Execute
    back = ServerSettings.from_run_config(settings.to_run_config())

    # Assert
    assert settings.to_run_config()["max-failure-share"] == 0.25
    assert back.max_failure_share == 0.25
    assert ServerSettings.from_run_config({}).max_failure_share == 0.5
