"""Device classes: the names a device reports and per-class policy overrides are keyed by."""

from __future__ import annotations

import re

#: The class a device reports when its node config names none.
DEFAULT_DEVICE_CLASS = "standard"
#: A device class is 1-32 letters, digits, '_', '.' or '-' (it is a record-key segment:
#: ``override.<device-class>.<field>``, so it must not hold spaces or other separators).
DEVICE_CLASS_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: The rule above in words, for error messages.
DEVICE_CLASS_RULE = "1-32 letters, digits, '_', '.' or '-'"
