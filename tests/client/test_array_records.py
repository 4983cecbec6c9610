"""Tests of client/array_records.py: the conversion both sides of the protocol use."""

from __future__ import annotations

import numpy as np

from apt_core import federated as fed
from apt_core.federated import record_keys as keys
from client.array_records import array_record, numpy_arrays


def test_array_record_round_trip_keeps_names_order_and_bytes() -> None:
    # Prepare
    model = fed.make_model("digits", "mlp", "fp32", seed=0)
    arrays = fed.model_arrays(model, "fp32")

    # Execute
    back = numpy_arrays(array_record(arrays))

    # Assert
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype


def test_array_record_carries_packed_payload_as_uint8() -> None:
    # Prepare
    arrays = fed.model_arrays(fed.make_model("digits", "mlp", "apt", seed=0), "apt")

    # Execute
    record = array_record(arrays)

    # Assert
    assert list(record) == [keys.APT_PAYLOAD]
    assert fed.arrays_nbytes(numpy_arrays(record)) == fed.arrays_nbytes(arrays)
