"""Pin torch to one intra-op thread while tiny models train on a busy machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, then restore the old count.

    Tiny GEMMs gain nothing from a second thread, and on a loaded machine the thread
    pool's hand-off costs ~50x the work itself.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
