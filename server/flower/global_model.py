"""The global model of a federated run: its stored forms, central evaluation and round record.

:class:`GlobalModel` is the part of :class:`server.flower.strategy.APTFedAvg` that holds the
current global model: it restores it from a checkpoint, packs it for the store, gives its
per-tensor max |w|, evaluates it centrally and builds each round's :class:`RoundReport`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord
from torch import nn

from apt_core import federated as fed
from apt_core.federated import record_keys as keys
from apt_core.federated.q8 import add_states, decode_q8, encode_q8, sub_states
from apt_core.packing import unpack_tensors
from apt_core.wire import unpack
from client.array_records import array_record, numpy_arrays
from server.flower.records import ClientReport, RoundReport

Recorder = Callable[[RoundReport], None]
Evaluator = Callable[[nn.Module], tuple[float, float]]

_FLOAT_METHOD_BITS = 32.0


class GlobalModel:
    """The global model's state and helpers, mixed into the strategy."""

    settings: fed.RunSettings
    template: nn.Module
    recorder: Recorder | None
    evaluator: Evaluator | None
    _global: ArrayRecord | None
    #: fp32-q8: the server's float32 model, of which devices receive the 8-bit copy
    _master: dict[str, torch.Tensor] | None = None
    _evaluated: dict[int, tuple[float, float]]

    def arrays_from_checkpoint(self, checkpoint: bytes) -> ArrayRecord:
        """The global model stored by :meth:`aggregate_train`, as the arrays to continue from.

        Packed codes for apt, a ``torch.save`` float state_dict otherwise.
        """
        s = self.settings
        model = fed.make_model(s.task, s.arch, s.method)
        if s.method == "apt":
            unpack(model, checkpoint)
        else:
            model.load_state_dict(torch.load(io.BytesIO(checkpoint), weights_only=True))
            self._master = fed.float_state(model)
        self._global = array_record(fed.model_arrays(model, s.method))
        return self._global

    def _global_max_abs(self) -> dict[str, float]:
        """Per-tensor max |w| of the global model this round started from."""
        if self._global is None:
            return {}
        arrays = numpy_arrays(self._global)
        if self.settings.method == "apt":
            model: fed.ReplyModel = unpack_tensors(arrays[keys.APT_PAYLOAD].tobytes())
        else:
            model = self._sent_state() or {}
        return fed.tensors_max_abs(model)

    def _sent_state(self) -> dict[str, torch.Tensor] | None:
        """The float state devices received this round (dequantized for fp32-q8; None: apt)."""
        if self._global is None or self.settings.method == "apt":
            return None
        arrays = numpy_arrays(self._global)
        if self.settings.method == "fp32-q8":
            return decode_q8(arrays, fed.float_state(self.template))
        return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}

    def _encode_global(self, new: fed.ReplyModel) -> tuple[ArrayRecord, bytes]:
        """The new global model as arrays to send and the bytes to store.

        fp32-q8: ``new`` is the round's model sent plus the mean update; the update goes
        into the server's float32 model, which is sent 8-bit quantized and stored as is.
        """
        if isinstance(new, list):
            arrays = fed.packed_arrays(new)
            return array_record(arrays), arrays[keys.APT_PAYLOAD].tobytes()
        if self.settings.method == "fp32-q8":
            sent = self._sent_state() or new
            master = getattr(self, "_master", None) or sent
            new = add_states(master, sub_states(new, sent))
            self._master = new
        buf = io.BytesIO()
        torch.save(new, buf)
        if self.settings.method == "fp32-q8":
            return array_record(encode_q8(new)), buf.getvalue()
        return array_record({k: v.numpy() for k, v in new.items()}), buf.getvalue()

    # --- evaluation and records ---------------------------------------------------------
    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Central evaluation of a global model (the ``evaluate_fn`` of ``start``)."""
        if self.evaluator is None:
            return None
        if server_round not in self._evaluated or server_round == 0:
            model = fed.make_model(self.settings.task, self.settings.arch, self.settings.method)
            fed.load_arrays(model, numpy_arrays(arrays), self.settings.method)
            self._evaluated[server_round] = self.evaluator(model)
        acc, loss = self._evaluated[server_round]
        return MetricRecord({keys.ACCURACY: float(acc), keys.LOSS: float(loss)})

    def _record(
        self,
        server_round: int,
        version: int,
        clients: list[ClientReport],
        arrays: ArrayRecord | None,
        packed: bytes | None,
        gbits: dict[str, int],
    ) -> None:
        acc = loss = None
        current = arrays if arrays is not None else self._global
        if current is not None and self.evaluator is not None:
            self._evaluated.pop(server_round, None)
            res = self.evaluate_global(server_round, current)
            if res is not None:
                acc, loss = float(res[keys.ACCURACY]), float(res[keys.LOSS])  # type: ignore
        ok = [c for c in clients if c.rejected is None and c.failure is None]
        if self.settings.method == "apt":
            mean = round_mean_bits(self.template, ok)
        else:
            mean = _FLOAT_METHOD_BITS
        record = RoundReport(
            round=server_round,
            accuracy=acc,
            loss=loss if loss is None or math.isfinite(loss) else None,
            # modelled energy of the aggregated replies only: a rejected reply's claim is
            # not trusted, and the fp32 estimate it is compared with counts only these
            energy_j=sum(c.energy_j for c in ok),
            uplink_bytes=sum(c.uplink_bytes for c in clients),
            downlink_bytes=sum(c.downlink_bytes for c in clients),
            participants=len(ok),
            failures=sum(c.failure is not None for c in clients),
            rejections=sum(c.rejected is not None for c in clients),
            mean_bits=mean,
            policy_version=version,
            clients=clients,
            global_bits=gbits,
            packed_model=packed,
        )
        if self.recorder is not None:
            self.recorder(record)


def round_mean_bits(template: nn.Module, accepted: list[ClientReport]) -> float | None:
    """Mean over the accepted devices of their parameter-weighted mean bits.

    A device without per-layer rows has no mean and is left out of the count (it is
    not a device at 0 bits); None when no device has one.
    """
    means = [fed.mean_bits(template, {x.layer: x.bits for x in c.layers}) for c in accepted]
    present = [m for m in means if m is not None]
    return sum(present) / len(present) if present else None
