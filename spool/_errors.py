"""The error hierarchy. Each name says whether retrying can help."""

from __future__ import annotations

__all__ = [
    "CredentialsError",
    "DeliveryError",
    "EndpointError",
    "MissingExtraError",
    "RejectedError",
    "RequestRefusedError",
    "SpoolClosedError",
    "SpoolConfigError",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolSchemaError",
    "TransientError",
]


class SpoolError(Exception):
    """Base of every error this package raises on purpose."""


class SpoolConfigError(SpoolError, ValueError):
    """Bad configuration (a field out of range, missing credentials). Fix the setting; retrying won't help."""


class MissingExtraError(SpoolError, ImportError):
    """A feature needs an optional extra that is not installed (`pip install 'span-spool[otel]'`). Install it;
    retrying won't help."""


class SpoolClosedError(SpoolError, RuntimeError):
    """The spool was closed; nothing more can be put into it."""


class SpoolSchemaError(SpoolError):
    """The file was written by a newer span-spool than this one. Upgrade; the file is left untouched."""


class SpoolCorruptError(SpoolError):
    """The file is not a readable spool. `damage` holds SQLite's words when it is a spool SQLite reports as damaged
    (a bad page, a torn header): `spool recover` salvages what is readable; None when it is not a spool file at all
    (empty, another program's file). Retrying won't help; the file is never modified because of it."""

    def __init__(self, path: object, damage: str | None = None) -> None:
        self.path = str(path)
        self.damage = damage
        if damage is None:
            message = f"{path} is not a spool file"
        else:
            message = f"{path} is damaged ({damage}); run: spool recover --path {path} --out NEW.db"
        super().__init__(message)


class DeliveryError(SpoolError):
    """A batch was not taken by the sink. `status` is the HTTP status (None: no response)."""

    def __init__(self, message: str, *, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class TransientError(DeliveryError):
    """The sink could not take the batch now (408, 429, 5xx, connection error, timeout). Retrying can help;
    `retry_after` is the server's requested wait in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after = retry_after


class RejectedError(DeliveryError):
    """The sink refused some item of the batch (400, 409, 413, 422). Retrying the same batch cannot help;
    splitting it finds the item."""


class CredentialsError(DeliveryError):
    """The sink refused the credentials (401, 403). Not the spans' fault: retrying helps once the key is fixed."""


class EndpointError(DeliveryError):
    """No span API at the sink's URL (404). Not the spans' fault: retrying helps once the base URL is fixed."""


class RequestRefusedError(DeliveryError):
    """Every request is refused the same way (one 4xx with one detail), a batch and single spans of it alike: the
    server wants a setting this sink does not send (a header, a project). Not the spans' fault: retrying helps once
    the configuration is fixed."""
