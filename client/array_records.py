"""Transport arrays in Flower records: named numpy arrays <-> an ``ArrayRecord``.

:mod:`apt_core.federated` speaks named numpy arrays (``{"apt-payload": uint8[...]}`` or a
float state); Flower carries them as an :class:`~flwr.app.ArrayRecord`. The ClientApp
writes replies with these two functions and the strategy reads them with the same two,
so both sides agree on the conversion by construction. The module imports only flwr and
numpy: the server side may import it (it already runs the ClientApp in simulation),
while the device never imports the server.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays an ``ArrayRecord`` holds, in its order."""
    return {k: v.numpy() for k, v in record.items()}


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` holding ``arrays`` under their names, in their order."""
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})
