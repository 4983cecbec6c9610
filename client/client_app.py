"""The aptfleet ClientApp: Flower wiring around :mod:`apt_core.federated` (no ML here).

A train reply carries three records:

* ``arrays`` (ArrayRecord): the trained model in transport form: one uint8 array
  ``apt-payload`` holding the bit-packed model for apt, for fp32-q8 the 8-bit update
  (``apt_core.federated.q8``), the float state dict otherwise;
* ``metrics`` (MetricRecord): ``num-examples``, ``train-loss``, ``energy-j``,
  ``param-bytes``, ``peak-memory-bytes``, ``uplink-bytes``, ``policy-version``,
  ``layer-bits`` / ``layer-exponents`` (lists in the model's ``apt_layers`` order, empty
  for float methods) and this round's precision history as parallel lists
  ``history-step``, ``history-layer`` (index into that order), ``history-bits``,
  ``history-gavg``, ``history-underflow``;
* ``device`` (ConfigRecord): ``device-class`` and ``partition-id``.

A ``query.identify`` message gets the ``device`` record alone: the server's seeded sampler
(``server.flower.sampling``) draws each round's devices by partition id.

Node config: ``partition-id``, ``num-partitions``, ``device-class`` (default "standard")
and the test hook ``fail-at-round`` (raise in train at that server round).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.federated import record_keys as keys
from client.array_records import array_record, numpy_arrays
from client.device import DeviceConfig, local_data, remember_bits, remembered_bits
from client.interrupt import install as install_stop_handler
from client.interrupt import stop_on_signal


def create_client_app(node_config: Mapping[int, Mapping[str, Any]] | None = None) -> ClientApp:
    """A ClientApp.

    Parameters
    ----------
    node_config : Mapping[int, Mapping[str, Any]] | None (default: None)
        Extra node-config entries per partition id, e.g. ``{2: {"fail-at-round": 2,
        "device-class": "mcu"}}``: the simulation's way to configure single devices
        (``run_simulation`` sets only partition-id and num-partitions).
    """
    app = ClientApp()
    extra = {int(k): dict(v) for k, v in (node_config or {}).items()}

    def _device(context: Context) -> DeviceConfig:
        cfg = dict(context.node_config)
        pid = cfg.get(keys.PARTITION_ID)
        cfg.update(extra.get(int(cast(int, pid)), {}) if pid is not None else {})
        return DeviceConfig.from_node_config(cfg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # simulated devices share two cores
        cfg = msg.content.config_records[keys.CONFIG]
        device = _device(context)
        server_round = int(cast(int, cfg[keys.SERVER_ROUND]))
        device.maybe_fail(server_round)
        run = fed.RunSettings.from_config(cfg)
        version, policy, overrides = fed.policy_from_config(cfg)
        eff = fed.effective_policy(policy, overrides, device.device_class)
        model = _global_model(msg, run, eff)
        received = fed.float_state(model) if run.method == "fp32-q8" else None
        with stop_on_signal():  # the fleet's run watcher ends a stopped run's training
            res = _train_locally(model, run, eff, device, context, server_round)
        arrays = fed.reply_arrays(res.model, run.method, received)
        content = RecordDict(
            {
                keys.ARRAYS: array_record(arrays),
                keys.METRICS: _train_metrics(res, arrays, version),
                keys.DEVICE: _device_record(device),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.query("identify")
    def identify(msg: Message, context: Context) -> Message:
        """Which device this is (the server's seeded sampler orders devices by it)."""
        return Message(
            content=RecordDict({keys.DEVICE: _device_record(_device(context))}), reply_to=msg
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        cfg = msg.content.config_records[keys.CONFIG]
        device = _device(context)
        run = fed.RunSettings.from_config(cfg)
        model = _global_model(msg, run)
        _, held_out = local_data(run, device)
        acc, loss = fed.evaluate_model(model, held_out, run.method)
        metrics = MetricRecord(
            {keys.NUM_EXAMPLES: len(held_out), keys.EVAL_ACCURACY: acc, keys.EVAL_LOSS: loss}
        )
        return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)

    return app


def _global_model(
    msg: Message, run: fed.RunSettings, policy: PrecisionPolicy | None = None
) -> nn.Module:
    """The model the server sent, in its transport form."""
    model = fed.make_model(run.task, run.arch, run.method, policy)
    fed.load_arrays(model, numpy_arrays(msg.content.array_records[keys.ARRAYS]), run.method)
    return model


def _train_locally(
    model: nn.Module,
    run: fed.RunSettings,
    policy: PrecisionPolicy,
    device: DeviceConfig,
    context: Context,
    server_round: int,
) -> fed.LocalResult:
    """One local round on the device's partition, starting from and keeping its bits."""
    train_set, _ = local_data(run, device)
    res = fed.local_round(
        model,
        train_set,
        method=run.method,
        policy=policy if run.method == "apt" else None,
        device_bits=remembered_bits(context, model),
        epochs=run.local_epochs,
        lr=run.lr,
        batch_size=run.batch_size,
        momentum=run.momentum,
        weight_decay=run.weight_decay,
        seed=fed.round_seed(run.seed, device.partition_id, server_round),
    )
    remember_bits(context, res.bits)
    return res


def _train_metrics(
    res: fed.LocalResult, arrays: Mapping[str, np.ndarray], version: int
) -> MetricRecord:
    """The reply's metrics: scalars, per-layer lists and the round's precision history."""
    layer_index = {name: i for i, name in enumerate(res.bits)}
    return MetricRecord(
        {
            keys.NUM_EXAMPLES: res.num_examples,
            keys.TRAIN_LOSS: float(res.train_loss),
            keys.ENERGY_J: float(res.energy_j),
            keys.PARAM_BYTES: res.param_bytes,
            keys.PEAK_MEMORY_BYTES: res.peak_memory_bytes,
            keys.UPLINK_BYTES: fed.arrays_nbytes(arrays),
            keys.POLICY_VERSION: version,
            keys.LAYER_BITS: list(res.bits.values()),
            keys.LAYER_EXPONENTS: list(res.exponents.values()),
            keys.HISTORY_STEP: [int(h["step"]) for h in res.history],
            keys.HISTORY_LAYER: [layer_index[h["layer"]] for h in res.history],
            keys.HISTORY_BITS: [int(h["bits"]) for h in res.history],
            keys.HISTORY_GAVG: [float(h["gavg"]) for h in res.history],
            keys.HISTORY_UNDERFLOW: [float(h["underflow"]) for h in res.history],
        }
    )


def _device_record(device: DeviceConfig) -> ConfigRecord:
    """Who the device says it is."""
    return ConfigRecord(
        {keys.DEVICE_CLASS: device.device_class, keys.PARTITION_ID: device.partition_id}
    )


install_stop_handler()  # a flwr-clientapp process answers the run watcher's stop signal
app = create_client_app()
