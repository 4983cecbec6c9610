"""Peak training memory of one step: live tensor bytes replayed from profiler events.

Method
------
``peak_train_bytes(step, baseline)`` returns the highest total of live CPU tensor bytes
during one call of ``step``:

1. **Baseline.** The bytes alive before the step that the caller can enumerate: the
   model's parameters and buffers (codes, exponents), their gradients if any, the
   optimizer state and the input batch. Each distinct storage is counted once, at its
   full ``untyped_storage().nbytes()``.
2. **Events.** ``step`` runs under ``torch.profiler.profile(profile_memory=True)``
   between two marker allocations whose data pointers identify them in the event list.
   Every allocation and free event between the markers is replayed in time order; the
   running sum of their sizes is the live-byte change since the step began.
3. **Peak** = baseline + the maximum of that running sum (0 if it never rises).
   ``retained_bytes`` is the running sum at the end (what the step leaves alive, e.g.
   gradients).

The profiler reports the free of a block only if it saw that block's allocation while
memory profiling was on; a tensor allocated earlier and freed by the step (the previous
step's momentum, codes rewritten by the optimizer) would otherwise never leave the sum.
(the profiler emits no event for it), and the peak would be overstated. So ``prime``
(typically one earlier training step and ``zero_grad``) runs inside the same profiling
session before the first marker: what the step frees was then allocated under the
profiler. A free the allocator does report for a block the session never saw allocated
(a stale record from an earlier session) is not replayed and is counted in
``unmatched_frees``.

Memory allocated outside torch's CPU allocator is invisible to the profiler: numpy
arrays (today's bit packing) are measured separately with :mod:`tracemalloc` as
``numpy_peak_bytes``, the peak growth of the traced Python heap during the step (numpy
registers its buffers there; Python objects created by the step are included, they are
small next to the arrays). Tensors the caller does not enumerate in the baseline (for
example a kernel workspace held across steps) are not counted.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

# Distinctive sizes make the markers easy to spot when reading a trace by hand; they are
# found by data pointer, so any size would do.
_MARKER_BYTES = (4093, 4091)


@dataclass(frozen=True)
class PeakMemory:
    """Live tensor bytes of one training step.

    Attributes
    ----------
    baseline_bytes : int
        Bytes of the enumerated tensors alive before the step.
    step_peak_bytes : int
        Maximum over the step of (bytes allocated - bytes freed) since it began.
    retained_bytes : int
        That running sum at the end of the step.
    numpy_peak_bytes : int
        Peak growth of the tracemalloc-traced heap (numpy buffers) during the step.
    alloc_events : int
        Allocation events inside the step.
    unmatched_frees : int
        Free events of blocks allocated before profiling (not replayed).
    """

    baseline_bytes: int
    step_peak_bytes: int
    retained_bytes: int
    numpy_peak_bytes: int
    alloc_events: int
    unmatched_frees: int

    @property
    def peak_train_bytes(self) -> int:
        """Highest total of live tensor bytes during the step."""
        return self.baseline_bytes + self.step_peak_bytes


def tensor_bytes(tensors: Iterable[Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (``None`` entries skipped)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += storage.nbytes()
    return total


def peak_train_bytes(
    step: Callable[[], object],
    baseline: Iterable[Tensor | None] | Callable[[], Iterable[Tensor | None]] = (),
    prime: Callable[[], object] | None = None,
) -> PeakMemory:
    """Measure the peak live tensor bytes of one call of ``step`` (method: module doc).

    Parameters
    ----------
    step : Callable[[], object]
        One training step (forward, loss, backward, optimizer step).
    baseline : Iterable[Tensor | None] | Callable[[], Iterable[Tensor | None]] (default: ())
        Every tensor alive before the step that belongs to the training state, or a
        function returning them, called after ``prime`` has run (the optimizer may only
        create its state in the first step).
    prime : Callable[[], object] | None (default: None)
        Run first, inside the profiling session, so that the frees of tensors it leaves
        behind are visible (for example one training step followed by ``zero_grad``).

    Returns
    -------
    PeakMemory
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if prime is not None:
            prime()
        base = tensor_bytes(baseline() if callable(baseline) else baseline)
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        try:
            start = torch.empty(_MARKER_BYTES[0], dtype=torch.uint8)
            heap0 = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            step()
            heap_peak = tracemalloc.get_traced_memory()[1]
            end = torch.empty(_MARKER_BYTES[1], dtype=torch.uint8)
        finally:
            if not tracing:
                tracemalloc.stop()
    events = _allocation_events(prof)
    return _replay(events, start, end, base, max(0, heap_peak - heap0))


def _allocation_events(prof: profile) -> list[tuple[int, int, int]]:
    """(time ns, signed size, data pointer) of every CPU allocation/free, in time order."""
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    out: list[tuple[int, int, int]] = []

    def walk(nodes: Iterable[Any]) -> None:
        for node in nodes:
            if node.tag == _EventType.Allocation:
                f = node.extra_fields
                if f.device.type == "cpu":
                    out.append((node.start_time_ns, int(f.alloc_size), int(f.ptr)))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    out.sort(key=lambda e: e[0])  # stable: same-timestamp events keep their tree order
    return out


def _replay(
    events: list[tuple[int, int, int]], start: Tensor, end: Tensor, base: int, numpy_peak: int
) -> PeakMemory:
    def marker(t: Tensor) -> int:
        ptr, size = t.data_ptr(), t.untyped_storage().nbytes()
        hits = [i for i, (_, s, p) in enumerate(events) if p == ptr and s == size]
        if not hits:
            raise RuntimeError(
                "Peak memory: the profiler recorded no marker allocation; "
                "is memory profiling supported by this torch build?"
            )
        return hits[-1]

    i0, i1 = marker(start), marker(end)
    live: set[int] = set()  # blocks the session saw allocated and not yet freed
    for _, size, ptr in events[:i0]:
        if size > 0:
            live.add(ptr)
        else:
            live.discard(ptr)
    running = peak = allocs = unmatched = 0
    for _, size, ptr in events[i0 + 1 : i1]:
        if size > 0:
            live.add(ptr)
            allocs += 1
        elif ptr in live:
            live.discard(ptr)
        else:
            unmatched += 1
            continue
        running += size
        peak = max(peak, running)
    return PeakMemory(
        baseline_bytes=base,
        step_peak_bytes=peak,
        retained_bytes=running,
        numpy_peak_bytes=numpy_peak,
        alloc_events=allocs,
        unmatched_frees=unmatched,
    )
