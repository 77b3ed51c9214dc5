"""A server that lies about file sizes cannot fill the device's disk (issue 17, item 5).

`LyingServer` is a real gRPC server on 127.0.0.1:0 speaking the device API: it serves the tiny
bundle's manifest with edits, and streams whatever each test tells it to for a file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from autohas_edge.common.filetable import MANIFEST, files_table, table_to_json
from autohas_edge.device_sdk import DownloadError, DownloadLimits, Hub, ServerClient
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from tests.device_sdk.helpers import APP, TASK, create_bundle_task
from tests.fixtures.server_fixtures import RunningServer

MODEL = "model-lies"
CHUNK = 1 << 20
#: stream(path, offset) -> the chunks' data the server sends for one DownloadModel call
Stream = Callable[[str, int], Iterator[bytes]]


class LyingServer(pb_grpc.DeviceServiceServicer):
    """Serves `manifest` (JSON text) with `files` as its file list, and `stream`'s bytes."""

    def __init__(self, manifest: str, files: dict[str, dict], stream: Stream) -> None:
        self.manifest, self.files, self.stream = manifest, files, stream
        self.downloads: list[str] = []
        self.model_id = MODEL

    def RegisterDevice(self, request: Any, context: Any) -> pb.RegisterDeviceResponse:
        return pb.RegisterDeviceResponse(device_id="d-1", device_token="t" * 32)

    def GetModelManifest(self, request: Any, context: Any) -> pb.ModelManifest:
        return pb.ModelManifest(
            model=pb.ModelInfo(model_id=self.model_id, task_id=TASK),
            manifest_json=self.manifest,
            files=[
                pb.ModelFile(path=p, sha256=e["sha256"], bytes=e["bytes"])
                for p, e in self.files.items()
            ],
        )

    def DownloadModel(self, request: Any, context: Any) -> Iterator[pb.FileChunk]:
        self.downloads.append(request.path)
        offset = request.offset
        for data in self.stream(request.path, offset):
            yield pb.FileChunk(path=request.path, offset=offset, data=data)
            offset += len(data)


@pytest.fixture
def lying(bundle_dir: Path) -> Iterator[Callable[..., tuple[LyingServer, str]]]:
    """Start a LyingServer: `lying(edit_manifest or None, stream)` -> (servicer, address).

    Unedited, it announces the signed bundle's files (manifest and signature included) as a real
    server does; edited, the edited manifest's files."""
    servers: list[grpc.Server] = []

    def start(edit: Callable[[dict], None] | None, stream: Stream) -> tuple[LyingServer, str]:
        text = (bundle_dir / MANIFEST).read_text()
        files = table_to_json(files_table(bundle_dir, with_manifest=True))
        if edit is not None:
            manifest = json.loads(text)
            edit(manifest)
            text, files = json.dumps(manifest), manifest["files"]
        servicer = LyingServer(text, files, stream)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_DeviceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def _honest(bundle_dir: Path) -> Stream:
    def stream(path: str, offset: int) -> Iterator[bytes]:
        data = (bundle_dir / path).read_bytes()[offset:]
        yield from (data[i : i + CHUNK] for i in range(0, max(len(data), 1), CHUNK))

    return stream


def _endless(path: str, offset: int) -> Iterator[bytes]:
    for _ in range(64):  # 64 MiB, then the "server" gives up: enough to show the old behaviour
        yield b"\0" * CHUNK


def _fetch(address: str, hub: Hub, tmp_path: Path, **limits: int) -> None:
    client = ServerClient(
        address,
        tmp_path / "state",
        app_id=APP,
        user_id="u",
        timeout=20.0,
        download_limits=DownloadLimits(**limits),
    )
    with client:
        client.register()
        client.fetch_model(TASK, hub, formats=["onnx"])


def _stored(hub: Hub) -> int:
    downloads = hub.root / "downloads"
    return sum(p.stat().st_size for p in downloads.rglob("*") if p.is_file())


def test_a_file_declared_a_terabyte_is_refused_before_a_byte_is_written(
    lying, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    def declare_a_terabyte(manifest: dict) -> None:
        manifest["files"]["head.npz"]["bytes"] = 1 << 40

    servicer, address = lying(declare_a_terabyte, _endless)
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(DownloadError, match=r"head\.npz: the server declares 1099511627776 bytes"):
        _fetch(address, hub, tmp_path)
    assert servicer.downloads == [] and _stored(hub) == 0
    assert hub.installed(TASK) is None


def test_a_bundle_over_its_cap_is_refused(
    lying, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    servicer, address = lying(None, _honest(bundle_dir))
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(DownloadError, match="max_bundle_bytes"):
        _fetch(address, hub, tmp_path, max_bundle_bytes=100_000)
    assert servicer.downloads == [] and _stored(hub) == 0


def test_writing_stops_where_the_declared_size_ends(
    lying, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    honest = _honest(bundle_dir)

    def overflowing(path: str, offset: int) -> Iterator[bytes]:
        if path != "head.npz":
            yield from honest(path, offset)
            return
        yield (bundle_dir / path).read_bytes() + b"\0" * (3 * CHUNK)  # one chunk, far too long
        yield from _endless(path, offset)

    _, address = lying(None, overflowing)
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(DownloadError, match=r"head\.npz: the server sends more than the \d+ bytes"):
        _fetch(address, hub, tmp_path)
    leftovers = [p.name for p in (hub.root / "downloads").rglob("head.npz*")]
    assert leftovers == []  # neither a finished file nor a .part to resume from


def test_a_download_that_would_fill_the_disk_is_refused(
    lying, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    servicer, address = lying(None, _honest(bundle_dir))
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(DownloadError, match="not enough free space"):
        _fetch(address, hub, tmp_path, min_free_bytes=free)  # the download would eat into it
    assert servicer.downloads == []
    _fetch(address, hub, tmp_path, min_free_bytes=0)  # the same bundle with room to spare
    assert hub.installed(TASK) == MODEL


def test_stale_partial_downloads_are_cleaned(
    server_factory: Callable[..., RunningServer],
    manifest_json: dict,
    bundle_dir: Path,
    tmp_path: Path,
    trusted_key: str,
) -> None:
    server = server_factory(data_dir=tmp_path / "server")
    create_bundle_task(server, manifest_json)
    model_id = server.handle.app.models.import_bundle(TASK, "import", bundle_dir).model_id
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    downloads = hub.root / "downloads"
    old = downloads / "model-gone" / "model.onnx.part"  # a model the server no longer offers
    recent = downloads / "model-other-app" / "model.onnx.part"  # another app fetching right now
    junk = downloads / model_id / "removed-file.bin.part"  # not in this bundle's file list
    for path in (old, recent, junk):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000))
    two_days_ago = time.time() - 2 * 86400
    for path in (old, old.parent):
        os.utime(path, (two_days_ago, two_days_ago))
    _fetch(server.address, hub, tmp_path)
    assert hub.installed(TASK) == model_id
    assert not old.parent.exists() and not junk.exists() and recent.exists()


def test_a_model_id_that_escapes_the_hub_is_a_download_error(
    lying, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    servicer, address = lying(None, _honest(bundle_dir))
    servicer.model_id = "../.."
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(DownloadError, match="the server sent an unusable model id"):
        _fetch(address, hub, tmp_path)
    assert servicer.downloads == [] and not (tmp_path / "downloads").exists()


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_file_bytes"):
        DownloadLimits(max_file_bytes=-1)
    with pytest.raises(ValueError, match="stale_seconds"):
        DownloadLimits(stale_seconds=float("nan"))
