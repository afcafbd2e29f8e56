"""span-spool: a durable, disk-spooled buffer for tracing span events, drained in batches to Scale GP
or to any OpenTelemetry (OTLP) endpoint.

`import spool` is light: each public name loads its module on first use, and httpx and the Scale GP SDK load only
when something is sent.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import SpoolConfig, default_path
    from ._errors import (
        CredentialsError,
        DeliveryError,
        EndpointError,
        MissingExtraError,
        RejectedError,
        RequestRefusedError,
        SpoolClosedError,
        SpoolConfigError,
        SpoolCorruptError,
        SpoolError,
        SpoolSchemaError,
        TransientError,
    )
    from ._otlpsink import OTLPSink
    from ._processors import SpoolTracingProcessor, SyncSpoolTracingProcessor
    from ._sink import SGPSink, Sink
    from ._spool import Spool
    from ._stats import SpoolStats

_WHERE = {
    "SpoolConfig": "_config",
    "default_path": "_config",
    "CredentialsError": "_errors",
    "DeliveryError": "_errors",
    "EndpointError": "_errors",
    "MissingExtraError": "_errors",
    "RejectedError": "_errors",
    "RequestRefusedError": "_errors",
    "SpoolClosedError": "_errors",
    "SpoolConfigError": "_errors",
    "SpoolCorruptError": "_errors",
    "SpoolError": "_errors",
    "SpoolSchemaError": "_errors",
    "TransientError": "_errors",
    "OTLPSink": "_otlpsink",
    "SpoolTracingProcessor": "_processors",
    "SyncSpoolTracingProcessor": "_processors",
    "SGPSink": "_sink",
    "Sink": "_sink",
    "Spool": "_spool",
    "SpoolStats": "_stats",
}

__all__ = [
    "CredentialsError",
    "DeliveryError",
    "EndpointError",
    "MissingExtraError",
    "OTLPSink",
    "RejectedError",
    "RequestRefusedError",
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
    "SpoolTracingProcessor",
    "SyncSpoolTracingProcessor",
    "TransientError",
    "default_path",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'spool' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
