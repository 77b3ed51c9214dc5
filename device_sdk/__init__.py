"""autohas-edge device SDK: run, share and personalise exported models on a device, without torch.

One `Hub` per device owns the models (a directory); every app asks it for a task's model::

    from autohas_edge.device_sdk import Hub, ServerClient

    hub = Hub("/data/autohas", trusted_keys=[SERVER_PUBLIC_KEY_PEM])  # installs only bundles it signed
    with ServerClient("server:50051", "/data/autohas/state", app_id="com.example.keyboard",
                      user_id="u-123") as client:
        client.register()                         # once; the token is kept on the device
        client.fetch_model("gestures", hub)       # resumable, hash-checked, verified, atomic
        client.grant_consent()                    # the user agreed to share examples
        client.upload("gestures", x_new, y_new)   # queued durably; sent now or on a later flush()

    model = hub.model("gestures", app_id="com.example.keyboard")  # shared with other apps
    probs = model.predict(x)                      # [C] for one example, [n, C] for a batch
    feats = model.embed(x)                        # [D] or [n, D]
    result = model.fine_tune(x_user, y_user)      # kept only if held-out accuracy improves
    added = model.add_class("wave", x_wave)       # 5-20 examples: a class of this app's own
    model.reset()                                 # back to the downloaded head

The hub installs only bundles signed (Ed25519, `signature.json`) by a key the app pins; an app that
must take unsigned bundles says so with `Hub(..., allow_unsigned=True)`. Predict and fine-tune never
touch the network. Every failure is an `SDKError` subclass that
names the problem (`InvalidInputError`, `BundleVerificationError`, `ConsentRequiredError`,
`ServerUnavailableError`, ...); none of them loses what is stored on the device.
"""

from autohas_edge.device_sdk import _telemetry  # noqa: F401  (first: sets ORT_DISABLE_TELEMETRY)
from autohas_edge.device_sdk._serde import ConsentInfo, TaskInfo
from autohas_edge.device_sdk.bundle import Artifact, Manifest
from autohas_edge.device_sdk.client import FetchResult, ServerClient, UploadReport
from autohas_edge.device_sdk.download import DownloadLimits
from autohas_edge.device_sdk.errors import (
    AuthenticationError,
    BundleError,
    BundleSignatureError,
    BundleVerificationError,
    ClientConfigError,
    ConsentRequiredError,
    DownloadError,
    InvalidIdError,
    InvalidInputError,
    LabelError,
    ModelNotFoundError,
    NotFoundError,
    RuntimeUnavailableError,
    SDKError,
    ServerError,
    ServerUnavailableError,
    SigningKeyError,
    StateDirError,
)
from autohas_edge.device_sdk.hub import Hub
from autohas_edge.device_sdk.model import AddClassResult, FineTuneResult, Model
from autohas_edge.device_sdk.runtime import available_runtimes
from autohas_edge.device_sdk.verify import VerificationReport, verify_bundle

__all__ = [
    "AddClassResult",
    "Artifact",
    "AuthenticationError",
    "BundleError",
    "BundleSignatureError",
    "BundleVerificationError",
    "ClientConfigError",
    "ConsentInfo",
    "ConsentRequiredError",
    "DownloadError",
    "DownloadLimits",
    "FetchResult",
    "FineTuneResult",
    "Hub",
    "InvalidIdError",
    "InvalidInputError",
    "LabelError",
    "Manifest",
    "Model",
    "ModelNotFoundError",
    "NotFoundError",
    "RuntimeUnavailableError",
    "SDKError",
    "ServerClient",
    "ServerError",
    "ServerUnavailableError",
    "SigningKeyError",
    "StateDirError",
    "TaskInfo",
    "UploadReport",
    "VerificationReport",
    "available_runtimes",
    "verify_bundle",
]
