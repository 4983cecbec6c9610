"""The device <-> server protocol of federated APT, in pure PyTorch (no flwr).

The ClientApp (``client/``) and the strategy (``server/flower/``) wrap these functions in
Flower records; the record keys both sides share live in :mod:`.record_keys`.

- :mod:`.settings`: run settings and the precision policy as config entries;
- :mod:`.codec`: models on the wire (packed codes for apt, float states otherwise);
- :mod:`.q8`: the fp32-q8 baseline's 8-bit weights and updates;
- :mod:`.validate`: a reply is checked whole before it is aggregated;
- :mod:`.aggregate`: the aggregation rule for mixed-precision replies;
- :mod:`.local`: one device's local round and model evaluation;
- :mod:`.budget`: the bit cap a device class's memory or energy budget allows (modelled).
"""

from apt_core.errors import ReplyError, SettingsError
from apt_core.federated.aggregate import aggregate, global_bits, mean_bits
from apt_core.federated.codec import (
    ReplyModel,
    arrays_nbytes,
    float_state,
    load_arrays,
    make_model,
    model_arrays,
    packed_arrays,
    reply_arrays,
)
from apt_core.federated.local import LocalResult, evaluate_model, local_round
from apt_core.federated.settings import (
    FED_METHODS,
    ConfigValue,
    Overrides,
    RunSettings,
    effective_policy,
    policy_from_config,
    policy_to_config,
    round_seed,
)
from apt_core.federated.validate import (
    GROWTH_LIMIT,
    check_growth,
    tensors_max_abs,
    validate_arrays,
    validate_packed,
    validate_state,
)

__all__ = [
    "FED_METHODS",
    "GROWTH_LIMIT",
    "ConfigValue",
    "LocalResult",
    "Overrides",
    "ReplyError",
    "ReplyModel",
    "RunSettings",
    "SettingsError",
    "aggregate",
    "arrays_nbytes",
    "check_growth",
    "effective_policy",
    "evaluate_model",
    "float_state",
    "global_bits",
    "load_arrays",
    "local_round",
    "make_model",
    "mean_bits",
    "model_arrays",
    "packed_arrays",
    "reply_arrays",
    "policy_from_config",
    "policy_to_config",
    "round_seed",
    "tensors_max_abs",
    "validate_arrays",
    "validate_packed",
    "validate_state",
]
