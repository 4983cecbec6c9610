"""A run's verdict from its round records: it fails loudly when its devices do not train.

Two rules end a run ``failed``:

* a round in which no reply was aggregated (every sampled device failed, was rejected
  or stayed silent) fails the run at once, after the round is recorded;
* at the end of the run, if more than ``max_failure_share`` of the sampled replies of
  the run were not aggregated (failed or rejected), the run fails.

Below those lines a failure is a recorded, surviving event: the round goes on with the
devices that replied. The reasons quoted are the devices' own (most frequent first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from server.flower.records import ClientReport, RoundReport

Recorder = Callable[[RoundReport], None]

#: Distinct reasons quoted in a failure message.
_REASONS_SHOWN = 3


class RunFailed(RuntimeError):
    """A federated run failed as a whole; the message gives the figures and the reasons.

    Parameters
    ----------
    message : str
        What failed, with counts.
    reasons : list[str]
        The devices' reasons, most frequent first, each with its count.
    """

    def __init__(self, message: str, reasons: list[str]) -> None:
        self.reasons = reasons
        shown = "; ".join(reasons) if reasons else "no reason reported"
        super().__init__(f"{message} Reasons: {shown}.")


def _reason(client: ClientReport) -> str | None:
    if client.failure is not None:
        return f"failed: {client.failure}"
    if client.rejected is not None:
        return f"rejected: {client.rejected}"
    return None


def _top_reasons(counts: Counter[str]) -> list[str]:
    return [f"{reason} ({n}x)" for reason, n in counts.most_common(_REASONS_SHOWN)]


@dataclass
class RunHealth:
    """Counts a run's replies round by round and raises :class:`RunFailed` by the rules.

    Parameters
    ----------
    max_failure_share : float
        Largest share of sampled replies, over the run, that may fail or be rejected
        (``ServerSettings.max_failure_share``), in [0, 1].
    """

    max_failure_share: float
    sampled: int = 0
    unsuccessful: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_failure_share <= 1.0:
            raise ValueError(f"max_failure_share={self.max_failure_share!r} must be in [0, 1].")

    def observe(self, record: RoundReport) -> None:
        """Count one recorded round.

        Raises
        ------
        RunFailed
            If no reply of the round was aggregated.
        """
        round_reasons = Counter(r for c in record.clients if (r := _reason(c)) is not None)
        self.sampled += len(record.clients)
        self.unsuccessful += sum(round_reasons.values())
        self.reasons.update(round_reasons)
        if record.participants == 0:
            raise RunFailed(
                f"Round {record.round}: no reply was aggregated ({len(record.clients)} sampled: "
                f"{record.failures} failed, {record.rejections} rejected).",
                _top_reasons(round_reasons),
            )

    def check_run(self) -> None:
        """Judge the whole run once its last round is recorded.

        Raises
        ------
        RunFailed
            If more than ``max_failure_share`` of the sampled replies were not aggregated.
        """
        if not self.sampled or self.unsuccessful / self.sampled <= self.max_failure_share:
            return
        raise RunFailed(
            f"{self.unsuccessful} of the run's {self.sampled} sampled replies "
            f"({self.unsuccessful / self.sampled:.0%}) failed or were rejected, more than "
            f"max-failure-share {self.max_failure_share:.0%}.",
            _top_reasons(self.reasons),
        )

    def recorder(
        self, inner: Callable[[RoundReport], None] | None
    ) -> Callable[[RoundReport], None]:
        """A recorder that hands each round to ``inner`` first, then observes it."""

        def record(report: RoundReport) -> None:
            if inner is not None:
                inner(report)
            self.observe(report)

        return record
