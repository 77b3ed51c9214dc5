"""A task may say how its input_shape reads (tabular, signal, image); a layout that contradicts the
shape is refused with the field named."""

from __future__ import annotations

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import RunningServer, expect_error


def test_a_task_keeps_its_layout(running_server: RunningServer) -> None:
    running_server.create_task("accel", input_shape=(3, 100), layout="signal")
    listed = running_server.operator.ListTasks(
        pb.ListTasksRequest(), metadata=running_server.op_md
    ).tasks
    got = next(t for t in listed if t.task_id == "accel")
    assert got.layout == "signal" and list(got.input_shape) == [3, 100]


def test_a_layout_that_contradicts_the_shape_is_refused(running_server: RunningServer) -> None:
    message = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        running_server.create_task,
        "flat",
        input_shape=(100,),
        layout="signal",
    )
    assert "task.layout" in message and "[1, L]" in message
