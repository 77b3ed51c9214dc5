"""Talk to the personalization server: register, consent, queued uploads, model downloads."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from autohas_edge.device_sdk._serde import (
    ConsentInfo,
    TaskInfo,
    consent_from_proto,
    task_from_proto,
    tensor_to_proto,
)
from autohas_edge.device_sdk._validate import as_examples, as_labels
from autohas_edge.device_sdk.download import DownloadLimits, download_bundle
from autohas_edge.device_sdk.errors import (
    AuthenticationError,
    ClientConfigError,
    ConsentRequiredError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    ServerError,
    ServerUnavailableError,
)
from autohas_edge.device_sdk.hub import Hub
from autohas_edge.device_sdk.outbox import Outbox, QueuedBatch
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc

DEFAULT_PURPOSE = "personalization"
_REVOKE = "revoke-pending/"
#: one upload stream carries at most this many bytes of example data (gRPC's default limit is 4 MiB)
STREAM_BYTES = 3 << 20
#: status codes with which the server refuses one batch for good (it would refuse every retry too)
_REFUSED = ("INVALID_ARGUMENT", "ALREADY_EXISTS")


@dataclass(frozen=True)
class UploadReport:
    """What one `flush` achieved."""

    stored: tuple[str, ...]
    duplicates: tuple[str, ...]
    rejected: tuple[str, ...]
    pending: int


@dataclass(frozen=True)
class FetchResult:
    """The outcome of `fetch_model`: the model id now installed and whether it changed."""

    model_id: str
    updated: bool


class ServerClient:
    """One app's connection for one user; its durable state lives in `state_dir` (survives restarts).

    The connection uses TLS unless the server is on this machine (a loopback address, `localhost`
    or a `unix:` socket): `root_certificates` (PEM bytes) pins the CA that signed the server's
    certificate, else gRPC's default roots are used; `credentials` replaces both (client
    certificates, say). `tls=True` forces TLS on loopback too; `tls=False` is an explicit opt-out
    to plaintext, for a trusted network only. `download_limits` caps what a model download may
    store (see `DownloadLimits`: 256 MiB a file, 1 GiB a bundle, 64 MiB kept free by default).
    """

    def __init__(
        self,
        address: str,
        state_dir: str | os.PathLike[str],
        *,
        app_id: str,
        user_id: str,
        device_name: str = "",
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        root_certificates: bytes | None = None,
        tls: bool | None = None,
        download_limits: DownloadLimits | None = None,
    ) -> None:
        self.address, self.app_id, self.user_id = address, app_id, user_id
        self.device_name, self.timeout = device_name, timeout
        self.download_limits = download_limits or DownloadLimits()
        secure = channel_credentials(address, tls, root_certificates, credentials)
        self.tls = secure is not None
        key = hashlib.sha256(f"{app_id}\0{user_id}".encode()).hexdigest()[:16]
        self.outbox = Outbox(Path(state_dir) / f"device-{key}.sqlite")
        options = [("grpc.max_receive_message_length", 16 << 20)]
        self._channel = (
            grpc.secure_channel(address, secure, options)
            if secure is not None
            else grpc.insecure_channel(address, options)
        )
        self._stub = pb_grpc.DeviceServiceStub(self._channel)

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and the local database (queued batches stay on disk)."""
        self._channel.close()
        self.outbox.close()

    # -- registration and consent -------------------------------------------------------------------

    @property
    def device_id(self) -> str | None:
        """This device's id once registered (kept across restarts)."""
        device_id: str | None = self.outbox.get("device_id")
        return device_id

    def register(self, *, force: bool = False, enrollment_ticket: str = "") -> str:
        """Register this device (once; kept across restarts unless `force`); returns the device id.

        `enrollment_ticket`: from the app's backend, when the server requires one (it then proves that
        this device may act for `user_id`); AuthenticationError when it is missing, forged or expired.
        """
        if self.device_id and not force:
            return self.device_id
        request = pb.RegisterDeviceRequest(
            app_id=self.app_id,
            user_id=self.user_id,
            device_name=self.device_name,
            enrollment_ticket=enrollment_ticket,
        )
        reply = self._call("RegisterDevice", request, auth=False)
        self.outbox.set("device_id", reply.device_id)
        self.outbox.set("device_token", reply.device_token)
        device_id: str = reply.device_id
        return device_id

    def revoke_device(self) -> None:
        """Revoke this device's token on the server (a lost or retired device) and forget it here.

        The token authenticates no more; the user's consents and stored examples stay (revoke_consent
        deletes examples). `register()` gives this device a new token afterwards.
        """
        self._call("RevokeDevice", pb.RevokeDeviceRequest())
        self.outbox.set("device_token", "")
        self.outbox.set("device_id", "")

    def grant_consent(self, purpose: str = DEFAULT_PURPOSE, text_version: str = "1") -> ConsentInfo:
        """Record the user's consent to upload examples for `purpose`."""
        reply = self._call(
            "GrantConsent",
            pb.GrantConsentRequest(purpose=purpose, consent_text_version=text_version),
        )
        return self._remember(consent_from_proto(reply))

    def revoke_consent(self, purpose: str = DEFAULT_PURPOSE) -> int:
        """Withdraw consent: unsent batches for `purpose` are deleted here, stored ones on the server.

        Returns the number of examples the server deleted. Offline, the local part happens at once
        and the revocation is sent before any later call (ServerUnavailableError is raised now).
        """
        # Local effects first and durably, so nothing more is uploaded even if the server is away.
        self.outbox.set(f"consent/{purpose}", False)
        self.outbox.purge(purpose)
        self.outbox.set(f"{_REVOKE}{purpose}", True)
        return self._send_revocation(purpose)

    def _send_revocation(self, purpose: str) -> int:
        reply = self._call("RevokeConsent", pb.RevokeConsentRequest(purpose=purpose), resend=False)
        self.outbox.set(f"{_REVOKE}{purpose}", False)
        self._remember(consent_from_proto(reply.consent))
        return int(reply.examples_deleted)

    def _resend_revocations(self) -> None:
        for key in self.outbox.keys(_REVOKE):
            if self.outbox.get(key):
                self._send_revocation(key.removeprefix(_REVOKE))

    def consents(self) -> list[ConsentInfo]:
        """The user's consent records, as the server holds them."""
        reply = self._call("ListConsents", pb.ListConsentsRequest())
        return [self._remember(consent_from_proto(c)) for c in reply.consents]

    def _remember(self, consent: ConsentInfo) -> ConsentInfo:
        self.outbox.set(f"consent/{consent.purpose}", consent.active)
        return consent

    def has_consent(self, purpose: str = DEFAULT_PURPOSE) -> bool:
        """Whether the user's consent for `purpose` is active, as last seen from the server."""
        return bool(self.outbox.get(f"consent/{purpose}", False))

    def task(self, task_id: str) -> TaskInfo:
        """A task's description (cached on the device, so it also works offline once fetched)."""
        cached = self.outbox.get(f"task/{task_id}")
        if cached is None:
            info = task_from_proto(self._call("GetTask", pb.GetTaskRequest(task_id=task_id)))
            self.outbox.set(f"task/{task_id}", dataclasses.asdict(info))
            return info
        return TaskInfo.from_dict(cached)

    # -- uploads ------------------------------------------------------------------------------------

    def enqueue(self, task_id: str, x: Any, y: Any) -> str:
        """Check and store a batch of examples in the local queue (no network); returns its batch id.

        Needs the user's active consent for the task's purpose; without it nothing is stored.
        """
        info = self.task(task_id)
        if not self.has_consent(info.purpose):
            with contextlib.suppress(ServerUnavailableError):
                self.consents()  # granted on another device of the same user? ask, when online
        if not self.has_consent(info.purpose):
            raise ConsentRequiredError(
                f"no active consent for purpose {info.purpose!r} (task {task_id!r}): "
                "call grant_consent() first",
                "FAILED_PRECONDITION",
            )
        features, _ = as_examples(x, info.input_shape)
        if len(features) == 0 or features.nbytes > STREAM_BYTES:
            raise InvalidInputError(
                f"x holds {len(features)} examples ({features.nbytes} bytes): "
                f"give 1 or more, at most {STREAM_BYTES} bytes per batch"
            )
        labels = as_labels(y, len(features), info.num_classes)
        return self.outbox.put(task_id, info.purpose, features.astype(info.input_dtype), labels)

    def upload(self, task_id: str, x: Any, y: Any) -> UploadReport:
        """Enqueue a batch, then try to send the queue; offline, it stays queued (ServerUnavailableError)."""
        self.enqueue(task_id, x, y)
        return self.flush()

    def pending_uploads(self) -> int:
        """Batches in the local queue, not yet confirmed by the server."""
        return self.outbox.count("pending")

    def flush(self) -> UploadReport:
        """Send every queued batch; each is deleted locally only once the server confirms it."""
        stored: list[str] = []
        dupes: list[str] = []
        rejected: list[str] = []
        while batches := self._next_stream():
            summary = self._send(batches, rejected)
            done = [*summary.stored_batch_ids, *summary.duplicate_batch_ids]
            self.outbox.remove(done)
            stored += summary.stored_batch_ids
            dupes += summary.duplicate_batch_ids
            left = [b.batch_id for b in batches if b.batch_id not in set(done) | set(rejected)]
            if left:  # the server neither stored nor refused them: retry later, not in a loop now
                self.outbox.record_failure(left, "not acknowledged by the server")
                break
        return UploadReport(tuple(stored), tuple(dupes), tuple(rejected), self.pending_uploads())

    def _next_stream(self) -> list[QueuedBatch]:
        batches: list[QueuedBatch] = []
        size = 0
        for batch in self.outbox.pending(limit=256):
            if not self.has_consent(batch.purpose):
                raise ConsentRequiredError(
                    f"queued batches need active consent for {batch.purpose!r}",
                    "FAILED_PRECONDITION",
                )
            size += batch.features.nbytes
            if batches and size > STREAM_BYTES:
                break
            batches.append(batch)
        return batches

    def _send(self, batches: list[QueuedBatch], rejected: list[str]) -> pb.UploadSummary:
        try:
            summary: pb.UploadSummary = self._call(
                "UploadExamples", iter([_to_proto(b) for b in batches])
            )
            return summary
        except ConsentRequiredError:
            for purpose in {b.purpose for b in batches}:
                self.outbox.set(f"consent/{purpose}", False)
            raise
        except ServerError as exc:
            if exc.code not in _REFUSED:  # unreachable, overloaded, ...: keep everything for later
                self.outbox.record_failure([b.batch_id for b in batches], str(exc))
                raise
        return self._send_one_by_one(batches, rejected)

    def _send_one_by_one(self, batches: list[QueuedBatch], rejected: list[str]) -> pb.UploadSummary:
        """Isolate the batch the server refuses and park it, so it cannot block the others forever."""
        total = pb.UploadSummary()
        for batch in batches:
            try:
                summary = self._call("UploadExamples", iter([_to_proto(batch)]))
            except ServerError as exc:
                if exc.code not in _REFUSED:
                    raise
                self.outbox.record_failure([batch.batch_id], str(exc), reject=True)
                rejected.append(batch.batch_id)
                continue
            total.stored_batch_ids.extend(summary.stored_batch_ids)
            total.duplicate_batch_ids.extend(summary.duplicate_batch_ids)
        return total

    # -- models -------------------------------------------------------------------------------------

    def fetch_model(
        self,
        task_id: str,
        hub: Hub,
        *,
        app_id: str | None = None,
        formats: Iterable[str] | None = None,
        on_chunk: Callable[[str, int, int], None] | None = None,
    ) -> FetchResult:
        """Download the task's latest bundle into `hub` (resumable, hash-checked, installed atomically).

        `formats` defaults to the hub's preferred runnable format; `on_chunk(path, done, total)`
        reports progress. A failure leaves the installed model untouched.
        """
        try:
            reply = self._call("GetModelManifest", pb.GetModelManifestRequest(task_id=task_id))
        except NotFoundError as exc:
            raise ModelNotFoundError(
                f"the server has no model for task {task_id!r}: {exc}"
            ) from exc
        model_id = reply.model.model_id
        have = (
            hub.installed_formats(task_id, app_id)
            if hub.installed(task_id, app_id) == model_id
            else []
        )
        if have and (formats is None or set(formats) <= set(have)):
            return FetchResult(model_id, False)
        fetch = lambda path, offset: self._call(  # noqa: E731 - a one-line adapter
            "DownloadModel",
            pb.DownloadModelRequest(model_id=model_id, path=path, offset=offset),
            stream=True,
        )
        directory, chosen = download_bundle(
            hub, reply, fetch, formats, on_chunk, self.download_limits
        )
        hub.install(directory, task_id, app_id=app_id, formats=chosen, model_id=model_id)
        shutil.rmtree(directory, ignore_errors=True)
        return FetchResult(model_id, True)

    # -- plumbing -----------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        request: Any,
        *,
        auth: bool = True,
        stream: bool = False,
        resend: bool = True,
    ) -> Any:
        metadata = self._metadata() if auth else None
        if auth and resend:
            self._resend_revocations()  # a revocation made offline reaches the server before anything else
        try:
            if stream:
                return _guard_stream(
                    getattr(self._stub, method)(request, timeout=self.timeout, metadata=metadata),
                    method,
                    self.address,
                )
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, method, self.address) from exc

    def _metadata(self) -> list[tuple[str, str]]:
        token = self.outbox.get("device_token")
        if not token:
            raise AuthenticationError(
                "this device is not registered: call register() first", "UNAUTHENTICATED"
            )
        return [("authorization", f"Bearer {token}")]


def is_loopback(address: str) -> bool:
    """Whether a gRPC target names this machine: a loopback IP, `localhost`, or a `unix:` socket."""
    target = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    if target.startswith("["):
        host = target[1 : target.find("]")]
    elif target.count(":") == 1:
        host = target.split(":", 1)[0]
    else:
        host = target  # no port, or a bare IPv6 address
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def channel_credentials(
    address: str,
    tls: bool | None,
    root_certificates: bytes | None,
    credentials: grpc.ChannelCredentials | None,
) -> grpc.ChannelCredentials | None:
    """The channel's TLS credentials (None: plaintext), by the rules `ServerClient` documents."""
    if tls is None:
        tls = credentials is not None or root_certificates is not None or not is_loopback(address)
    if not tls:
        if credentials is not None or root_certificates is not None:
            raise ClientConfigError(
                "tls=False contradicts the credentials / root certificates given"
            )
        return None
    if credentials is not None:
        if root_certificates is not None:
            raise ClientConfigError("give credentials or root_certificates, not both")
        return credentials
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def _to_proto(batch: QueuedBatch) -> pb.ExampleBatch:
    return pb.ExampleBatch(
        batch_id=batch.batch_id,
        task_id=batch.task_id,
        features=tensor_to_proto(batch.features),
        labels=batch.labels.tolist(),
    )


def _guard_stream(chunks: Iterator[Any], method: str, address: str) -> Iterator[Any]:
    try:
        yield from chunks
    except grpc.RpcError as exc:
        raise map_rpc_error(exc, method, address) from exc


_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


def map_rpc_error(exc: grpc.RpcError, method: str, address: str) -> ServerError:
    """The SDK exception for a failed call: unreachable, unauthenticated, no consent, or other."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    message = f"{method} failed: {code.name}: {details}"
    if code in _UNAVAILABLE:
        return ServerUnavailableError(
            f"server {address} unreachable ({message}); local data is kept", code.name
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" not in (details or ""):
        # the server is at its limit of open streams or calls: retryable, unlike an oversized message
        return ServerUnavailableError(
            f"server {address} busy ({message}); retry later, local data is kept", code.name
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(message, code.name)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message, code.name)
    if (
        code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
        and "consent" in (details or "").lower()
    ):
        return ConsentRequiredError(message, code.name)
    return ServerError(message, code.name)
