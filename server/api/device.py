"""DeviceService: what a phone's SDK calls. Each method unpacks, makes one core call, packs the reply."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server.accounts import Accounts
from autohas_edge.server.api import serde
from autohas_edge.server.api.interceptors import device_of, principal_of
from autohas_edge.server.examples import Examples
from autohas_edge.server.models import ModelRegistry

Ctx = grpc.ServicerContext
log = logging.getLogger(__name__)


class DeviceServicer(pb_grpc.DeviceServiceServicer):
    """The device-facing RPCs; auth and error mapping happen in the interceptors."""

    def __init__(self, accounts: Accounts, examples: Examples, models: ModelRegistry) -> None:
        self._accounts, self._examples, self._models = accounts, examples, models

    def RegisterDevice(
        self, request: pb.RegisterDeviceRequest, context: Ctx
    ) -> pb.RegisterDeviceResponse:
        device, token = self._accounts.register_device(
            request.app_id, request.user_id, request.device_name, request.enrollment_ticket
        )
        return pb.RegisterDeviceResponse(device_id=device.device_id, device_token=token)

    def GrantConsent(self, request: pb.GrantConsentRequest, context: Ctx) -> pb.Consent:
        device = device_of(context)
        consent = self._accounts.grant_consent(
            device, request.purpose, request.consent_text_version
        )
        return serde.consent_to_proto(consent)

    def RevokeConsent(
        self, request: pb.RevokeConsentRequest, context: Ctx
    ) -> pb.RevokeConsentResponse:
        consent, deleted = self._accounts.revoke_consent(device_of(context), request.purpose)
        return pb.RevokeConsentResponse(
            consent=serde.consent_to_proto(consent), examples_deleted=deleted
        )

    def ListConsents(
        self, request: pb.ListConsentsRequest, context: Ctx
    ) -> pb.ListConsentsResponse:
        consents = self._accounts.list_consents(device_of(context))
        return pb.ListConsentsResponse(consents=[serde.consent_to_proto(c) for c in consents])

    def RevokeDevice(
        self, request: pb.RevokeDeviceRequest, context: Ctx
    ) -> pb.RevokeDeviceResponse:
        device = self._accounts.revoke_device(principal_of(context), request.device_id)
        assert device.revoked_at is not None
        return pb.RevokeDeviceResponse(
            device_id=device.device_id, revoked_at=serde.timestamp_to_proto(device.revoked_at)
        )

    def GetTask(self, request: pb.GetTaskRequest, context: Ctx) -> pb.Task:
        return serde.task_to_proto(self._examples.get_task(principal_of(context), request.task_id))

    def UploadExamples(
        self, request_iterator: Iterator[pb.ExampleBatch], context: Ctx
    ) -> pb.UploadSummary:
        device = device_of(context)
        batches = (serde.batch_from_proto(message) for message in request_iterator)
        result = self._examples.upload(device, batches)
        log.info(
            "upload from device %s: %d batches stored (%d examples), %d duplicates",
            device.device_id,
            len(result.stored_batch_ids),
            result.examples_stored,
            len(result.duplicate_batch_ids),
        )
        return serde.upload_result_to_proto(result)

    def ListModels(self, request: pb.ListModelsRequest, context: Ctx) -> pb.ListModelsResponse:
        models = self._models.list(principal_of(context), request.task_id)
        return pb.ListModelsResponse(models=[serde.model_info_to_proto(m) for m in models])

    def GetModelManifest(
        self, request: pb.GetModelManifestRequest, context: Ctx
    ) -> pb.ModelManifest:
        principal = principal_of(context)
        info, manifest, files = self._models.manifest(principal, request.model_id, request.task_id)
        return pb.ModelManifest(
            model=serde.model_info_to_proto(info),
            manifest_json=manifest,
            files=[serde.model_file_to_proto(f) for f in files],
        )

    def DownloadModel(
        self, request: pb.DownloadModelRequest, context: Ctx
    ) -> Iterator[pb.FileChunk]:
        chunks = self._models.chunks(
            principal_of(context),
            request.model_id,
            request.path,
            request.offset,
            request.chunk_bytes,
        )
        for file, offset, data in chunks:
            yield pb.FileChunk(
                path=file.path, offset=offset, data=data, total_bytes=file.bytes, sha256=file.sha256
            )
