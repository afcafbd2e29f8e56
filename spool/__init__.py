"""span-spool: a durable, disk-spooled buffer for tracing span events, drained in batches to Scale GP.

Importing `spool` is light: httpx and the Scale GP SDK load only when something is sent.
"""

from ._config import SpoolConfig, default_path
from ._errors import (
    CredentialsError,
    DeliveryError,
    RejectedError,
    SpoolClosedError,
    SpoolConfigError,
    SpoolCorruptError,
    SpoolError,
    SpoolSchemaError,
    TransientError,
)
from ._sink import SGPSink, Sink
from ._spool import Spool
from ._stats import SpoolStats

__all__ = [
    "CredentialsError",
    "DeliveryError",
    "RejectedError",
    "SGPSink",
    "Sink",
    "Spool",
    "SpoolClosedError",
    "SpoolConfig",
    "SpoolConfigError",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolSchemaError",
    "SpoolStats",
    "TransientError",
    "default_path",
]

__version__ = "0.1.0"
