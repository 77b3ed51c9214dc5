"""Exceptions raised by the device SDK: one class per problem an app can act on."""

from __future__ import annotations


class SDKError(Exception):
    """Base class of every error the device SDK raises on purpose."""


class InvalidInputError(SDKError, ValueError):
    """`x` or `y` given to predict / embed / fine_tune / upload has the wrong shape, dtype or values."""


class LabelError(InvalidInputError):
    """A label is not an integer in `[0, num_classes)`."""


class InvalidIdError(InvalidInputError):
    """A task, app or model id is not of the id grammar (e.g. `../..`)."""


class StateDirError(SDKError):
    """The directory given for the SDK's state (it holds the device token) is shared with others."""


class BundleError(SDKError):
    """A model bundle is malformed: missing file, unreadable manifest, unsupported artifact."""


class BundleVerificationError(BundleError):
    """A bundle failed verification: a file's sha256/size or a reference output does not match."""


class BundleSignatureError(BundleVerificationError):
    """A bundle is unsigned (and the app did not opt out), signed by a key the app does not trust,
    or its signature does not match its files."""


class SigningKeyError(SDKError, ValueError):
    """A key given to the SDK (`Hub(trusted_keys=...)`) is not an Ed25519 public key in PEM."""


class ClientConfigError(SDKError, ValueError):
    """Options given to `ServerClient` contradict each other (e.g. `tls=False` with credentials)."""


class ModelNotFoundError(SDKError, LookupError):
    """No model is installed on the device (or on the server) for the requested task."""


class RuntimeUnavailableError(SDKError):
    """The requested inference runtime (onnxruntime / TFLite interpreter) is not installed."""


class ServerError(SDKError):
    """The server answered a call with an error (its gRPC status and message are attached)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class NotFoundError(ServerError, LookupError):
    """The server has no such task, model or file (or none this device may see)."""


class ServerUnavailableError(ServerError):
    """The server cannot be reached (offline, wrong address, timed out); nothing local was lost."""


class AuthenticationError(ServerError):
    """The device is not registered or its token was refused."""


class ConsentRequiredError(ServerError):
    """Uploading needs the user's active consent for the task's purpose, and there is none."""


class DownloadError(SDKError):
    """A model download broke or its bytes do not match the announced hash; the old model stays."""
