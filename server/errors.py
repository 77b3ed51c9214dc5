"""Domain errors: the core raises these; the gRPC layer maps each to one status code, in one place."""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the core reports to a caller; `code` names a `grpc.StatusCode` member."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(Exception):
    """A job was asked to stop before it finished (raised by an engine's `run_job`)."""


class InvalidArgument(ServerError):
    """A request field is malformed; the message starts with the field's name."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class NotFound(ServerError):
    """An id names nothing that exists."""

    code = "NOT_FOUND"


class AlreadyExists(ServerError):
    """A create would overwrite something, or a retried batch id carries different content."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ServerError):
    """The request is well formed but the state forbids it (no consent, job not finished, ...)."""

    code = "FAILED_PRECONDITION"


class Unauthenticated(ServerError):
    """No token, or a token that belongs to no one."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ServerError):
    """A valid token that may not do this."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(ServerError):
    """A configured limit was hit."""

    code = "RESOURCE_EXHAUSTED"


class DataLoss(ServerError):
    """Stored data is damaged."""

    code = "DATA_LOSS"


class Unavailable(ServerError):
    """A part of the server is not installed or is shutting down."""

    code = "UNAVAILABLE"
