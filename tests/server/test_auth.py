"""Auth through a real server: every RPC's token rule, hashed tokens, and isolation of apps and users."""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.api.interceptors import Access, access_table
from autohas_edge.server.store import DB_FILE
from tests.fixtures.server_fixtures import (
    PURPOSE,
    RunningServer,
    SeededServer,
    bearer,
    example_batch,
    expect_error,
)

TABLE = access_table()
METHODS = sorted(TABLE)


def call(server: RunningServer, method: str, metadata: Any = None) -> Any:
    """Call any RPC of the API with a default request (a stream gets one default message)."""
    service_name, name = method.strip("/").split("/")
    service = pb.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[1]]
    descriptor = service.methods_by_name[name]
    stub = server.device if service.name == "DeviceService" else server.operator
    request = getattr(pb, descriptor.input_type.name)()
    reply = getattr(stub, name)(
        iter([request]) if descriptor.client_streaming else request, metadata=metadata, timeout=10
    )
    return list(reply) if descriptor.server_streaming else reply


def test_every_rpc_has_an_access_rule_and_only_registration_is_public() -> None:
    assert len(METHODS) == sum(len(s.methods) for s in pb.DESCRIPTOR.services_by_name.values())
    assert [m for m in METHODS if TABLE[m] is Access.PUBLIC] == [
        "/autohas.v1.DeviceService/RegisterDevice"
    ]
    assert all(TABLE[m] is Access.OPERATOR for m in METHODS if "OperatorService" in m)


@pytest.mark.parametrize("method", [m for m in METHODS if TABLE[m] is not Access.PUBLIC])
def test_missing_wrong_or_malformed_tokens_are_unauthenticated(
    running_server: RunningServer, method: str
) -> None:
    device = running_server.register()
    forged = device.token[:-4] + ("AAAA" if not device.token.endswith("AAAA") else "BBBB")
    for metadata in (
        None,
        bearer("not-a-token"),
        bearer(forged),
        (("authorization", device.token),),
        (("authorization", f"Basic {device.token}"),),
    ):
        expect_error(grpc.StatusCode.UNAUTHENTICATED, call, running_server, method, metadata)


@pytest.mark.parametrize("method", [m for m in METHODS if TABLE[m] is Access.OPERATOR])
def test_device_tokens_cannot_call_operator_rpcs(
    running_server: RunningServer, method: str
) -> None:
    device = running_server.register()
    details = expect_error(
        grpc.StatusCode.PERMISSION_DENIED, call, running_server, method, device.md
    )
    assert "operator token" in details


@pytest.mark.parametrize("method", [m for m in METHODS if TABLE[m] is Access.DEVICE])
def test_the_operator_token_cannot_act_as_a_device(
    running_server: RunningServer, method: str
) -> None:
    s = running_server
    details = expect_error(grpc.StatusCode.PERMISSION_DENIED, call, s, method, s.op_md)
    assert "device token" in details


def test_tokens_are_random_bound_to_one_device_and_stored_hashed(
    running_server: RunningServer,
) -> None:
    a, b = running_server.register(user_id="alice"), running_server.register(user_id="alice")
    assert a.device_id != b.device_id and a.token != b.token
    assert len(a.token.split(".", 1)[1]) >= 43  # 256 random bits, base64url
    swapped = f"{b.device_id}.{a.token.split('.', 1)[1]}"  # a's secret presented for b's id
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        running_server.device.ListConsents,
        pb.ListConsentsRequest(),
        metadata=bearer(swapped),
    )
    with sqlite3.connect(running_server.data_dir / DB_FILE) as conn:
        dump = "\n".join(conn.iterdump())
    assert a.token not in dump and a.token.split(".", 1)[1] not in dump
    assert running_server.operator_token not in dump


def test_a_device_cannot_use_or_see_another_apps_tasks_and_models(
    running_server: RunningServer,
) -> None:
    s = running_server
    s.create_task("task-a", app_ids=("app.a",))
    s.create_task("task-b", app_ids=("app.b",))
    a, b = s.register("app.a", "alice"), s.register("app.b", "bob")
    for device in (a, b):
        device.stub.GrantConsent(
            pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
        )
    assert s.device.GetTask(pb.GetTaskRequest(task_id="task-a"), metadata=a.md).task_id == "task-a"
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.GetTask,
        pb.GetTaskRequest(task_id="task-a"),
        metadata=b.md,
    )
    details = expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.UploadExamples,
        iter([example_batch("b1", task_id="task-a")]),
        metadata=b.md,
    )
    assert details.startswith("task_id")
    # another app's task answers exactly as an unknown one: no oracle of which ids exist
    unknown = expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.UploadExamples,
        iter([example_batch("b1", task_id="task-z")]),
        metadata=b.md,
    )
    assert details.replace("task-a", "task-z") == unknown
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.ListModels,
        pb.ListModelsRequest(task_id="task-a"),
        metadata=b.md,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.GetModelManifest,
        pb.GetModelManifestRequest(task_id="task-a"),
        metadata=b.md,
    )
    # the operator reads every task's models; a device lists only its app's
    assert (
        s.device.ListModels(pb.ListModelsRequest(task_id="task-a"), metadata=s.op_md).models == []
    )


def test_models_of_another_app_are_invisible(seeded_server: SeededServer, tmp_path: Any) -> None:
    s = seeded_server.server
    s.create_task("other", app_ids=("app.other",))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    mine = s.handle.app.models.import_bundle("gestures", "", bundle)
    theirs = s.handle.app.models.import_bundle("other", "", bundle)
    device = seeded_server.device
    listed = device.stub.ListModels(pb.ListModelsRequest(), metadata=device.md).models
    assert [m.model_id for m in listed] == [mine.model_id]
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        device.stub.GetModelManifest,
        pb.GetModelManifestRequest(model_id=theirs.model_id),
        metadata=device.md,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        device.stub.DownloadModel,
        pb.DownloadModelRequest(model_id=theirs.model_id, path="manifest.json"),
        metadata=device.md,
    )
    all_models = s.device.ListModels(pb.ListModelsRequest(), metadata=s.op_md).models
    assert {m.model_id for m in all_models} == {mine.model_id, theirs.model_id}


def test_the_same_user_id_in_two_apps_is_two_people(running_server: RunningServer) -> None:
    s = running_server
    s.create_task("shared", app_ids=("app.a", "app.b"))
    a, b = s.register("app.a", "alice"), s.register("app.b", "alice")
    a.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=a.md
    )
    a.stub.UploadExamples(iter([example_batch("b1", task_id="shared")]), metadata=a.md)
    details = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        b.stub.UploadExamples,
        iter([example_batch("b1", task_id="shared")]),
        metadata=b.md,
    )
    assert details.startswith("consent")
    assert b.stub.ListConsents(pb.ListConsentsRequest(), metadata=b.md).consents == []
