"""Federated APT: one device's local round, the server's aggregation rule, reply validation.

Pure PyTorch (no flwr). The ClientApp and the strategy wrap these functions in Flower
records; the record keys they share live in :mod:`apt_core.record_keys`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from apt_core import record_keys as keys
from apt_core.config import PolicyError, PrecisionPolicy
from apt_core.cost import activation_bits, model_nbytes, profile_layers, tensors_nbytes
from apt_core.data import make_loader
from apt_core.layers import apt_layers, layer_bits, to_apt
from apt_core.methods import setup_method
from apt_core.models import build_model
from apt_core.optimizer import APTSGD
from apt_core.packing import PackedTensor, PackError, pack_tensors, unpack_tensors
from apt_core.qat import to_qat
from apt_core.quant import choose_exponent, dequantize, quantize
from apt_core.trainer import evaluate, train
from apt_core.wire import check_against, model_tensors, pack, unpack

#: Methods a federated run can use. fixedN are centralized baselines only.
FED_METHODS = ("apt", "fp32", "qat8")
_POLICY_FIELDS = tuple(f.name for f in fields(PrecisionPolicy))

Overrides = dict[str, dict[str, Any]]
ConfigValue = int | float | str | bool
ReplyModel = list[PackedTensor] | dict[str, Tensor]


class ReplyError(ValueError):
    """A device's reply cannot be aggregated; the message says why in a full sentence."""


# --- policy on the wire -----------------------------------------------------------------
def _kebab(name: str) -> str:
    return name.replace("_", "-")


def policy_to_config(version: int, policy: PrecisionPolicy,
                     overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, ConfigValue]:
    """Flatten a policy, its version and per-class overrides into config entries.

    Keys are ``policy-version``, ``policy.<field>`` and ``override.<class>.<field>`` with
    kebab-case fields (see :mod:`apt_core.record_keys`); every value is a scalar.
    """
    out: dict[str, ConfigValue] = {keys.POLICY_VERSION: int(version)}
    for name, value in policy.to_dict().items():
        out[keys.POLICY_PREFIX + _kebab(name)] = value
    for device_class, changes in overrides.items():
        for name, value in changes.items():
            if name not in _POLICY_FIELDS:
                raise PolicyError(f"Invalid precision policy: unknown field '{name}' in the "
                                  f"override of device class '{device_class}'.")
            if value is not None:
                out[f"{keys.OVERRIDE_PREFIX}{device_class}.{_kebab(name)}"] = value
    return out


def policy_from_config(config: Mapping[str, Any]) -> tuple[int, PrecisionPolicy, Overrides]:
    """Inverse of :func:`policy_to_config`: (version, fleet policy, per-class overrides)."""
    by_kebab = {_kebab(n): n for n in _POLICY_FIELDS}
    base: dict[str, Any] = {}
    overrides: Overrides = {}
    for key, value in config.items():
        if key.startswith(keys.POLICY_PREFIX):
            name = key[len(keys.POLICY_PREFIX):]
            if name not in by_kebab:
                raise PolicyError(f"Invalid precision policy: unknown field '{name}'.")
            base[by_kebab[name]] = value
        elif key.startswith(keys.OVERRIDE_PREFIX):
            device_class, _, name = key[len(keys.OVERRIDE_PREFIX):].rpartition(".")
            if name not in by_kebab or not device_class:
                raise PolicyError(f"Invalid precision policy: override key '{key}' does not "
                                  "name a device class and a policy field.")
            overrides.setdefault(device_class, {})[by_kebab[name]] = value
    return int(config.get(keys.POLICY_VERSION, 0)), PrecisionPolicy.from_dict(base), overrides


def effective_policy(policy: PrecisionPolicy, overrides: Mapping[str, Mapping[str, Any]],
                     device_class: str) -> PrecisionPolicy:
    """The policy a device of ``device_class`` trains with (its override applied).

    Raises
    ------
    PolicyError
        If the override names an unknown field or yields an invalid policy.
    """
    changes = dict(overrides.get(device_class) or {})
    if not changes:
        return policy
    unknown = sorted(set(changes) - {f.name for f in fields(PrecisionPolicy)})
    if unknown:
        raise PolicyError(f"Invalid precision policy: unknown field '{unknown[0]}' in the "
                          f"override of device class '{device_class}'.")
    return policy.with_(**changes)


# --- run settings on the wire -----------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """Settings every device of a federated run shares (sent in each round's config).

    Parameters
    ----------
    task : str (default: "digits")
    arch : str (default: "cnn")
    method : str (default: "apt")
        "apt", "fp32" or "qat8".
    local_epochs : int (default: 5)
    lr : float (default: 0.1)
        Constant local learning rate.
    batch_size : int (default: 16)
        (5 local epochs of batch 16 at lr 0.1: with 20 devices a digits partition is
        ~57 training samples, and 1 epoch of batch 32 barely moves fp32 FedAvg in 30
        rounds.)
    momentum : float (default: 0.9)
    weight_decay : float (default: 5e-4)
    alpha : float | None (default: 0.5)
        Dirichlet label skew of the partitions; None is IID (sent as 0.0).
    seed : int (default: 0)
    """

    task: str = "digits"
    arch: str = "cnn"
    method: str = "apt"
    local_epochs: int = 5
    lr: float = 0.1
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float | None = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in FED_METHODS:
            raise ValueError(f"Invalid run settings: method={self.method!r} is not one of "
                             f"{FED_METHODS}.")
        for name in ("local_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Invalid run settings: {name}={getattr(self, name)!r} must "
                                 "be >= 1.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Invalid run settings: lr={self.lr!r} must be a number > 0.")

    def to_config(self) -> dict[str, ConfigValue]:
        """Flat config entries (kebab-case keys from :mod:`apt_core.record_keys`)."""
        return {keys.TASK: self.task, keys.ARCH: self.arch, keys.METHOD: self.method,
                keys.LOCAL_EPOCHS: self.local_epochs, keys.LR: float(self.lr),
                keys.BATCH_SIZE: self.batch_size, keys.MOMENTUM: float(self.momentum),
                keys.WEIGHT_DECAY: float(self.weight_decay),
                keys.ALPHA: float(self.alpha) if self.alpha else 0.0, keys.SEED: self.seed}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Read the entries :meth:`to_config` wrote (missing ones take the defaults)."""
        d = cls()
        alpha = float(config.get(keys.ALPHA, d.alpha or 0.0))
        return cls(task=str(config.get(keys.TASK, d.task)),
                   arch=str(config.get(keys.ARCH, d.arch)),
                   method=str(config.get(keys.METHOD, d.method)),
                   local_epochs=int(config.get(keys.LOCAL_EPOCHS, d.local_epochs)),
                   lr=float(config.get(keys.LR, d.lr)),
                   batch_size=int(config.get(keys.BATCH_SIZE, d.batch_size)),
                   momentum=float(config.get(keys.MOMENTUM, d.momentum)),
                   weight_decay=float(config.get(keys.WEIGHT_DECAY, d.weight_decay)),
                   alpha=alpha if alpha > 0 else None,
                   seed=int(config.get(keys.SEED, d.seed)))


def round_seed(seed: int, partition_id: int, server_round: int) -> int:
    """Seed of one device's local round: distinct per device and round, reproducible."""
    return (seed * 1_000_003 + partition_id * 10_007 + server_round) % (2**31 - 1)


# --- models on the wire -----------------------------------------------------------------
def make_model(task: str, arch: str, method: str, policy: PrecisionPolicy | None = None,
               seed: int | None = None) -> nn.Module:
    """A fresh model in its transport form: APT layers for apt, float for fp32/qat8."""
    if method not in FED_METHODS:
        raise ValueError(f"method={method!r} is not one of {FED_METHODS}.")
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(task, arch)
    return to_apt(model, policy or PrecisionPolicy()) if method == "apt" else model


def float_state(model: nn.Module) -> dict[str, Tensor]:
    """The float parameters a fp32/qat8 model exchanges (QAT's int8 copies stay local)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.endswith(".weight_q")}


def model_arrays(model: nn.Module, method: str) -> dict[str, np.ndarray]:
    """Transport arrays of a model: one uint8 packed payload for apt, else the float state."""
    if method == "apt":
        return {keys.APT_PAYLOAD: np.frombuffer(pack(model), dtype=np.uint8).copy()}
    return {k: v.cpu().numpy() for k, v in float_state(model).items()}


def packed_arrays(tensors: list[PackedTensor]) -> dict[str, np.ndarray]:
    """Transport arrays of an apt model given as fixed-point tensors."""
    return {keys.APT_PAYLOAD: np.frombuffer(pack_tensors(tensors), dtype=np.uint8).copy()}


def arrays_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the model data in transport arrays (what goes over the link)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], method: str) -> nn.Module:
    """Write transport arrays into ``model`` (raises PackError / RuntimeError when wrong)."""
    if method == "apt":
        return unpack(model, _payload(arrays))
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)
    return model


def _payload(arrays: Mapping[str, np.ndarray]) -> bytes:
    if set(arrays) != {keys.APT_PAYLOAD}:
        raise ReplyError(f"The apt model must travel as the single array '{keys.APT_PAYLOAD}'; "
                         f"got arrays {sorted(arrays)}.")
    a = np.asarray(arrays[keys.APT_PAYLOAD])
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ReplyError(f"Array '{keys.APT_PAYLOAD}' must be 1-D uint8; got dtype {a.dtype} "
                         f"with shape {list(a.shape)}.")
    return a.tobytes()


# --- validation -------------------------------------------------------------------------
def validate_packed(template: nn.Module, payload: bytes, policy: PrecisionPolicy
                    ) -> list[PackedTensor]:
    """Parse and check a device's packed model against the template and its policy.

    Checks the wire format (magic, version, truncation, trailing bytes), tensor names,
    order and shapes (``wire.check_against``), one bit-width per layer inside
    ``[policy.bits_min, policy.bits_max]``, and finite dequantized values.

    Raises
    ------
    ReplyError
        Naming the first problem found.
    """
    try:
        tensors = unpack_tensors(payload)
        check_against(template, tensors)
    except PackError as exc:
        raise ReplyError(f"The packed model is malformed: {exc}") from None
    lo, hi = policy.bits_min, policy.bits_max
    layer_of: dict[str, int] = {}
    for t in tensors:
        layer = t.name.rpartition(".")[0]
        if layer_of.setdefault(layer, t.bits) != t.bits:
            raise ReplyError(f"Layer '{layer}' carries two bit-widths ({layer_of[layer]} and "
                             f"{t.bits}); weight and bias must share one.")
        if not lo <= t.bits <= hi:
            raise ReplyError(f"Tensor '{t.name}' has bits={t.bits}, outside the device "
                             f"policy's range [{lo}, {hi}].")
        try:
            finite = bool(torch.isfinite(dequantize(t.codes, t.exponent)).all())
        except OverflowError:
            finite = False
        if not finite:
            raise ReplyError(f"Tensor '{t.name}' has non-finite values after dequantization "
                             f"(exponent={t.exponent}).")
    return tensors


#: A reply tensor whose largest magnitude exceeds this multiple of the round's global
#: tensor is refused: honest local training does not grow a layer's range that much in
#: one round, while a hostile or corrupt update (huge values, a forged exponent) does.
GROWTH_LIMIT = 64.0


def tensors_max_abs(model: ReplyModel) -> dict[str, float]:
    """Largest magnitude of every tensor of a reply (dequantized for apt)."""
    if isinstance(model, list):
        return {t.name: float(dequantize(t.codes, t.exponent, torch.float64).abs().max())
                for t in model}
    return {k: float(v.abs().max()) for k, v in model.items()}


def check_growth(reference: Mapping[str, float], model: ReplyModel,
                 limit: float = GROWTH_LIMIT) -> None:
    """Refuse a reply whose tensors grew more than ``limit`` times past ``reference``.

    Raises
    ------
    ReplyError
        Naming the tensor, its magnitude and the bound.
    """
    for name, amax in tensors_max_abs(model).items():
        ref = reference.get(name)
        if ref is None:
            continue
        bound = limit * max(ref, 1e-3)
        if amax > bound:
            raise ReplyError(f"Tensor '{name}' reaches |w| = {amax:.3g}, more than {limit:g}x "
                             f"the global model's {ref:.3g}: refused as a corrupt or hostile "
                             "update.")


def validate_state(template: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Check a fp32/qat8 state dict: same keys and shapes as the template, all finite.

    Raises
    ------
    ReplyError
        Naming the first offending tensor.
    """
    expected = float_state(template)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ReplyError(f"The model's tensors do not match: missing {missing}, "
                         f"unexpected {extra}.")
    out: dict[str, Tensor] = {}
    for name, ref in expected.items():
        t = state[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ReplyError(f"Tensor '{name}' has shape {list(t.shape)}; the model's is "
                             f"{list(ref.shape)}.")
        if not t.is_floating_point():
            raise ReplyError(f"Tensor '{name}' has dtype {t.dtype}; a float is required.")
        if not bool(torch.isfinite(t).all()):
            raise ReplyError(f"Tensor '{name}' holds NaN or Inf values.")
        out[name] = t
    return out


def validate_arrays(template: nn.Module, arrays: Mapping[str, np.ndarray], method: str,
                    policy: PrecisionPolicy) -> ReplyModel:
    """Validate a reply's transport arrays for ``method``; returns the decoded model."""
    if method == "apt":
        return validate_packed(template, _payload(arrays), policy)
    return validate_state(template, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


# --- aggregation ------------------------------------------------------------------------
def aggregate(template: nn.Module, replies: Sequence[tuple[ReplyModel, int]]) -> ReplyModel:
    """Example-weighted FedAvg of validated replies.

    apt (replies are lists of :class:`PackedTensor`): each tensor is dequantized
    (``codes * 2**-exponent``) and averaged in float64 with weights ``n_k / sum(n)``. The
    global tensor is then re-quantized with round-to-nearest, where

    * bits of a layer = the **max** over this round's replies of that layer's bits (no
      device's resolution is lost; a device with a narrower policy clamps on arrival);
    * exponent of each tensor = ``choose_exponent(max|w_avg|, bits)``: the finest grid
      whose range still holds the averaged tensor without saturating.

    fp32/qat8 (replies are state dicts): the plain weighted average, in the template's
    dtypes.

    Parameters
    ----------
    template : nn.Module
        A model of the run's architecture and method (names, order, shapes, dtypes).
    replies : Sequence[tuple[list[PackedTensor] | dict[str, Tensor], int]]
        Validated models and their example counts (> 0).

    Returns
    -------
    list[PackedTensor] | dict[str, Tensor]
        The global model, in the replies' form.
    """
    if not replies:
        raise ValueError("aggregate needs at least one reply.")
    total = float(sum(n for _, n in replies))
    if total <= 0:
        raise ValueError(f"the replies hold {total:g} examples in total; need > 0.")
    if isinstance(replies[0][0], dict):
        ref = float_state(template)
        acc = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in ref.items()}
        for state, n in replies:
            assert isinstance(state, dict)
            for k in acc:
                acc[k] += state[k].to(torch.float64) * (n / total)
        return {k: v.to(ref[k].dtype) for k, v in acc.items()}
    names = [t.name for t in model_tensors(template)]
    avg = {name: torch.zeros(0, dtype=torch.float64) for name in names}
    bits: dict[str, int] = {}
    for tensors, n in replies:
        assert isinstance(tensors, list)
        for t in tensors:
            value = dequantize(t.codes, t.exponent, torch.float64) * (n / total)
            avg[t.name] = value if avg[t.name].numel() == 0 else avg[t.name] + value
            layer = t.name.rpartition(".")[0]
            bits[layer] = max(bits.get(layer, 0), t.bits)
    out = []
    for name in names:
        b = bits[name.rpartition(".")[0]]
        value = avg[name]
        f = choose_exponent(float(value.abs().max()) if value.numel() else 0.0, b)
        out.append(PackedTensor(name, quantize(value, b, f), b, f))
    return out


def global_bits(tensors: list[PackedTensor]) -> dict[str, int]:
    """Bit-width of every layer of a packed model (weight and bias share it)."""
    return {t.name.rpartition(".")[0]: t.bits for t in tensors}


def mean_bits(template: nn.Module, bits: Mapping[str, int]) -> float | None:
    """Parameter-weighted mean of per-layer bits over the template's APT layers."""
    layers = {n: m.numel_params() for n, m in apt_layers(template).items() if n in bits}
    total = sum(layers.values())
    return sum(n * bits[name] for name, n in layers.items()) / total if total else None


# --- one device's round -----------------------------------------------------------------
@dataclass
class LocalResult:
    """What one device's local round produced.

    ``payload`` is the packed model for apt (what the device uploads), ``state`` the
    float state dict for fp32/qat8. ``bits``/``exponents`` follow the ``apt_layers``
    order (empty for float methods). ``history`` holds this round's controller checks
    as dicts (step, layer, old_bits, bits, exponent, gavg, underflow).
    """

    model: nn.Module
    payload: bytes | None
    state: dict[str, Tensor] | None
    bits: dict[str, int]
    exponents: dict[str, int]
    history: list[dict[str, Any]]
    energy_j: float
    param_bytes: int
    peak_memory_bytes: int
    num_examples: int
    train_loss: float
    steps: int = 0
    uplink_bytes: int = 0


def local_round(model: nn.Module, train_set: Dataset, *, method: str,
                policy: PrecisionPolicy | None, device_bits: Mapping[str, int] | None,
                epochs: int, lr: float, batch_size: int, momentum: float = 0.9,
                weight_decay: float = 5e-4, seed: int = 0) -> LocalResult:
    """Train the global model on one device's data for one federated round.

    Parameters
    ----------
    model : nn.Module
        Holds the global weights: an APT model for apt (from :func:`make_model` and
        :func:`load_arrays`), a float model for fp32/qat8 (qat8 is converted here).
    train_set : Dataset
        The device's local training partition.
    method : str
        "apt", "fp32" or "qat8".
    policy : PrecisionPolicy | None
        The device's effective policy (required for apt).
    device_bits : Mapping[str, int] | None
        Bits the device ended its previous round with; each layer is set to them
        (clamped into the policy range) after the global model is loaded. None on a
        device's first round: the global bits are kept, clamped into the range.
    epochs, lr, batch_size, momentum, weight_decay, seed
        Local training settings (constant learning rate within the round).

    Returns
    -------
    LocalResult

    Notes
    -----
    The controller window also closes at the end of the round: steps observed since the
    last check (fewer than ``check_every``) are judged then, so devices whose rounds are
    shorter than ``check_every`` steps still adapt once per round.
    """
    if method not in FED_METHODS:
        raise ValueError(f"method={method!r} is not one of {FED_METHODS}.")
    if method == "apt":
        if policy is None:
            raise ValueError("local_round: method='apt' needs a policy.")
        for name, layer in apt_layers(model).items():
            b = device_bits.get(name, layer.n_bits) if device_bits else layer.n_bits
            layer.set_bits(min(max(int(b), policy.bits_min), policy.bits_max))
    loader = make_loader(train_set, batch_size, shuffle=True, seed=seed)
    example = next(iter(loader))[0][:2]
    profiles = profile_layers(model, example)
    s = setup_method(method, model, profiles, policy=policy, lr=lr, momentum=momentum,
                     weight_decay=weight_decay, seed=seed)
    m = train(s.model, loader, optimizer=s.optimizer, epochs=epochs, lr_schedule=lambda _: lr,
              controller=s.controller, meter=s.meter, eval_every_epoch=False)
    history = list(m.history)
    if s.controller is not None:
        last = max((h["step"] for h in history), default=0)
        if m.steps > last:
            layers = apt_layers(model)
            n_before = len(s.controller.history)
            new = s.controller.decide(m.steps, {n: (lay.n_bits, lay.exponent())
                                                for n, lay in layers.items()})
            for n, b in new.items():
                layers[n].set_bits(b)
            history += [h.to_dict() for h in s.controller.history[n_before:]]
    if isinstance(s.optimizer, APTSGD):
        opt_state = list(s.optimizer.state_tensors())
    else:
        opt_state = [v for st in s.optimizer.state.values() for v in st.values()
                     if isinstance(v, Tensor)]
    act = policy.act_bits if method == "apt" and policy else 32
    param_bytes = model_nbytes(model)
    peak = (param_bytes + tensors_nbytes(opt_state)
            + activation_bits(profiles, batch_size, act) // 8)
    payload = pack(model) if method == "apt" else None
    state = None if method == "apt" else float_state(model)
    uplink = len(payload) if payload is not None else sum(
        t.numel() * t.element_size() for t in (state or {}).values())
    return LocalResult(
        model=model, payload=payload, state=state, bits=layer_bits(model),
        exponents={n: lay.exponent() for n, lay in apt_layers(model).items()},
        history=history, energy_j=m.energy_j, param_bytes=param_bytes,
        peak_memory_bytes=int(peak), num_examples=len(train_set),  # type: ignore[arg-type]
        train_loss=m.train_loss, steps=m.steps, uplink_bytes=int(uplink))


def evaluate_model(model: nn.Module, dataset: Dataset, method: str, batch_size: int = 256
                   ) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of a transport-form model on ``dataset``.

    qat8 is scored as deployed (8-bit fake-quantized weights and inputs).
    """
    if method == "qat8":
        model = to_qat(copy.deepcopy(model), 8)
    acc, loss = evaluate(model, make_loader(dataset, batch_size, shuffle=False, seed=0))
    return acc, (loss if math.isfinite(loss) else float("nan"))
