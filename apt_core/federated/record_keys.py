"""Record keys shared by the ClientApp and the strategy: plain kebab-case strings, no flwr.

Every key a Flower message, node config or node state carries is defined here once. The
policy travels flattened: ``policy.<field>`` for the fleet policy and
``override.<device-class>.<field>`` for a class override, where ``<field>`` is a
:class:`~apt_core.config.PrecisionPolicy` field in kebab-case (``bits-max``).
"""

# --- records of a message (the keys FedAvg uses for its own records) ----------------------
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DEVICE = "device"  # ConfigRecord of a train reply: who the device says it is

#: The one uint8 array of an apt model: the bit-packed wire format of ``apt_core.wire``.
APT_PAYLOAD = "apt-payload"

# --- train / evaluate config (server -> client) -------------------------------------------
SERVER_ROUND = "server-round"  # FedAvg adds it
METHOD = "method"
TASK = "task"
ARCH = "arch"
LOCAL_EPOCHS = "local-epochs"
LR = "lr"
BATCH_SIZE = "batch-size"
MOMENTUM = "momentum"
WEIGHT_DECAY = "weight-decay"
ALPHA = "alpha"  # Dirichlet concentration; <= 0 means an IID split
SEED = "seed"
POLICY_VERSION = "policy-version"
POLICY_PREFIX = "policy."
OVERRIDE_PREFIX = "override."

# --- node config (deployment: --node-config; simulation: set by Flower) -----------------
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DEVICE_CLASS = "device-class"
FAIL_AT_ROUND = "fail-at-round"  # test hook: raise in train at this server round

# --- train reply metrics (client -> server) ------------------------------------------------
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
ENERGY_J = "energy-j"
PARAM_BYTES = "param-bytes"
PEAK_MEMORY_BYTES = "peak-memory-bytes"
UPLINK_BYTES = "uplink-bytes"
#: Per-layer lists, in the model's ``apt_layers`` order (module order).
LAYER_BITS = "layer-bits"
LAYER_EXPONENTS = "layer-exponents"
#: This round's precision history, one entry per (controller check, layer).
HISTORY_STEP = "history-step"
HISTORY_LAYER = "history-layer"  # index into the apt_layers order
HISTORY_BITS = "history-bits"
HISTORY_GAVG = "history-gavg"
HISTORY_UNDERFLOW = "history-underflow"

EVAL_ACCURACY = "eval-accuracy"
EVAL_LOSS = "eval-loss"

# --- central evaluation (server) --------------------------------------------------------
ACCURACY = "accuracy"
LOSS = "loss"

# --- node state (persists across rounds on one device) ----------------------------------
STATE_DEVICE_BITS = "device-bits"  # MetricRecord {LAYER_BITS: [...]} in apt_layers order
