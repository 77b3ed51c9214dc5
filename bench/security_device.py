"""Device-side attacks of issue 17, run against whichever device SDK is importable (old or new).

    python -m bench.security_device --bundle BUNDLE_DIR

BUNDLE_DIR is any bundle `autohas export` wrote (signed or not: the script works on copies). Each
attack prints one line, `name: outcome`. The script uses only the API both the old and the new SDK
have, plus the new options where they exist, so running it with an older checkout first on
`PYTHONPATH` gives the "before" column (see the `security (device side)` section of RESULTS.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from autohas_edge.common.filetable import MANIFEST, files_table, table_to_json
from autohas_edge.device_sdk import Hub, ServerClient
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc

TASK = "t"
CHUNK = 1 << 20
#: what the lying server streams for a file it declares to be a terabyte, before it gives up
FLOOD_BYTES = 256 * CHUNK


def new_api() -> bool:
    """Whether the imported SDK has bundle signatures (the new one)."""
    import autohas_edge.device_sdk as sdk

    return hasattr(sdk, "BundleSignatureError")


class Keys:
    """A trusted key pair (new SDK only): signs bundles and makes hubs that pin it."""

    def __init__(self, work: Path) -> None:
        self.private: Any = None
        self.public = ""
        if new_api():
            from autohas_edge.export.signing import generate_key, load_private_key

            public, _ = generate_key(work / "trusted.pem")
            self.private, self.public = load_private_key(work / "trusted.pem"), public.read_text()

    def hub(self, root: Path) -> Hub:
        """A hub as an app makes it: pinning the trusted key where the SDK can."""
        return Hub(root, trusted_keys=[self.public]) if self.public else Hub(root)

    def sign(self, bundle: Path) -> None:
        """Sign `bundle` with the trusted key (a no-op for the old SDK)."""
        if self.private is not None:
            from autohas_edge.export.signing import sign_bundle

            sign_bundle(bundle, self.private)


def outcome(action: Callable[[], str]) -> str:
    """What `action` reports, or the exception it raised (class and first line)."""
    try:
        return action()
    except BaseException as exc:
        kind = "SDKError" if is_sdk_error(exc) else "not an SDKError"
        return f"raised {type(exc).__name__} ({kind}): {str(exc).splitlines()[0][:110]}"


def is_sdk_error(exc: BaseException) -> bool:
    from autohas_edge.device_sdk import SDKError

    return isinstance(exc, SDKError)


def class_zero(bundle: Path) -> None:
    """Rewrite `bundle` (ONNX only) so its model answers class 0 always, with matching checks."""
    from tests.fixtures.bundle_edits import always_class_zero

    always_class_zero(bundle)


def install_and_predict(hub: Hub, bundle: Path, x: np.ndarray) -> str:
    hub.install(bundle, TASK, formats=["onnx"])
    top = hub.model(TASK, app_id="com.a").predict(x).argmax(axis=1)
    return f"installed; predicts class 0 on {int((top == 0).sum())}/{len(top)} inputs"


def attacks_on_bundles(source: Path, work: Path, keys: Keys) -> dict[str, str]:
    """Hand-built, re-signed and tampered bundles given to `Hub.install`."""
    with np.load(source / "reference.npz") as ref:
        x = ref["x"][:16]
    results: dict[str, str] = {}
    evil = Path(shutil.copytree(source, work / "evil"))
    class_zero(evil)
    results["hand-built class-0 bundle, hub.install"] = outcome(
        lambda: install_and_predict(keys.hub(work / "h1"), evil, x)
    )
    if new_api():
        from autohas_edge.export.signing import generate_key, load_private_key, sign_bundle

        generate_key(work / "attacker.pem")
        signed_by_attacker = Path(shutil.copytree(evil, work / "evil-attacker"))
        sign_bundle(signed_by_attacker, load_private_key(work / "attacker.pem"))
        results["class-0 bundle signed by another key"] = outcome(
            lambda: install_and_predict(keys.hub(work / "h2"), signed_by_attacker, x)
        )
        no_manifest = Path(shutil.copytree(evil, work / "evil-nomanifest"))
        sign_without_manifest(no_manifest, keys.private)
        results["class-0 bundle, trusted signature without manifest.json"] = outcome(
            lambda: install_and_predict(keys.hub(work / "h3"), no_manifest, x)
        )
    tampered = Path(shutil.copytree(source, work / "tampered"))
    keys.sign(tampered)
    with np.load(tampered / "head.npz") as head:
        np.savez(tampered / "head.npz", weight=head["weight"][::-1].copy(), bias=head["bias"])
    rehash(tampered, "head.npz")
    results["signed bundle, head.npz changed and manifest rehashed"] = outcome(
        lambda: install_and_predict(keys.hub(work / "h4"), tampered, x)
    )
    return results


def sign_without_manifest(bundle: Path, key: Any) -> None:
    from autohas_edge.device_sdk.signing import SCHEME, SIGNATURE_FILE, key_id, signed_payload

    table = files_table(bundle)
    signer = key_id(key.public_key())
    document = {
        "scheme": SCHEME,
        "key_id": signer,
        "files": table_to_json(table),
        "signature": base64.b64encode(key.sign(signed_payload(SCHEME, signer, table))).decode(),
    }
    (bundle / SIGNATURE_FILE).write_text(json.dumps(document))


def rehash(bundle: Path, name: str) -> None:
    from tests.fixtures.bundle_edits import rehash as edit

    edit(bundle, name)


class LyingServer(pb_grpc.DeviceServiceServicer):
    """A real gRPC device service that serves a manifest with a file declared a terabyte."""

    def __init__(
        self, manifest: str, files: dict[str, dict], source: Path, overflow: str = ""
    ) -> None:
        self.manifest, self.files, self.source = manifest, files, source
        self.overflow = overflow  # a file sent with 3 MiB more than declared

    def RegisterDevice(self, request: Any, context: Any) -> pb.RegisterDeviceResponse:
        return pb.RegisterDeviceResponse(device_id="d", device_token="t" * 32)

    def GetModelManifest(self, request: Any, context: Any) -> pb.ModelManifest:
        files = [
            pb.ModelFile(path=p, sha256=e["sha256"], bytes=e["bytes"])
            for p, e in self.files.items()
        ]
        return pb.ModelManifest(
            model=pb.ModelInfo(model_id="m", task_id=TASK), manifest_json=self.manifest, files=files
        )

    def DownloadModel(self, request: Any, context: Any) -> Iterator[pb.FileChunk]:
        offset = request.offset
        if self.files[request.path]["bytes"] < 1 << 40:
            data = (self.source / request.path).read_bytes()[offset:]
            if request.path == self.overflow:
                data += b"\0" * (3 * CHUNK)
            yield pb.FileChunk(path=request.path, offset=offset, data=data)
            return
        for _ in range(FLOOD_BYTES // CHUNK):
            yield pb.FileChunk(path=request.path, offset=offset, data=b"\0" * CHUNK)
            offset += CHUNK


@contextlib.contextmanager
def serving(servicer: Any, host: str = "127.0.0.1") -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_DeviceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop(0)


def attack_terabyte(source: Path, work: Path, keys: Keys) -> str:
    """A manifest declaring head.npz a terabyte; the server streams FLOOD_BYTES of zeros."""
    manifest = json.loads((source / MANIFEST).read_text())
    manifest["files"]["head.npz"]["bytes"] = 1 << 40
    servicer = LyingServer(json.dumps(manifest), manifest["files"], source)
    hub = keys.hub(work / "h-tb")
    start = time.perf_counter()
    with serving(servicer) as address:
        result = outcome(lambda: fetch(address, hub, work / "state-tb"))
    seconds = time.perf_counter() - start
    parts = (
        list((hub.root / "downloads").rglob("*.part")) if (hub.root / "downloads").exists() else []
    )
    written = sum(p.stat().st_size for p in parts)
    return (
        f"{result}; {written / CHUNK:.0f} MiB written in {seconds:.1f} s, {len(parts)} .part kept"
    )


def attack_overflow(source: Path, work: Path, keys: Keys) -> str:
    """An honest manifest, but head.npz is sent with 3 MiB more than it declares."""
    bundle = Path(shutil.copytree(source, work / "overflow-src"))
    keys.sign(bundle)
    files = table_to_json(files_table(bundle, with_manifest=True))
    servicer = LyingServer((bundle / MANIFEST).read_text(), files, bundle, overflow="head.npz")
    hub = keys.hub(work / "h-overflow")
    with serving(servicer) as address:
        result = outcome(lambda: fetch(address, hub, work / "state-overflow"))
    kept = list((hub.root / "downloads").rglob("head.npz*"))
    return f"{result}; head.npz files kept: {len(kept)}"


def fetch(address: str, hub: Hub, state: Path) -> str:
    with ServerClient(address, state, app_id="com.a", user_id="u", timeout=30.0) as client:
        client.register()
        client.fetch_model(TASK, hub, formats=["onnx"])
    return "downloaded and installed"


def attack_stale_part(work: Path, keys: Keys, source: Path) -> str:
    """A 2-day-old .part of a model the server no longer offers, then a download of another model."""
    hub = keys.hub(work / "h-stale")
    stale = hub.root / "downloads" / "model-gone" / "model.onnx.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * CHUNK)
    old = time.time() - 2 * 86400
    os.utime(stale, (old, old))
    os.utime(stale.parent, (old, old))
    bundle = Path(shutil.copytree(source, work / "stale-src"))
    keys.sign(bundle)
    files = table_to_json(files_table(bundle, with_manifest=True))
    with serving(LyingServer((bundle / MANIFEST).read_text(), files, bundle)) as address:
        result = outcome(lambda: fetch(address, hub, work / "state-stale"))
    return f"{result}; stale .part {'kept' if stale.exists() else 'deleted'}"


def attack_tls(work: Path) -> str:
    """A plaintext server on a non-loopback address (a network attacker's position)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        ip = probe.getsockname()[0]

    class Echo(pb_grpc.DeviceServiceServicer):
        def RegisterDevice(self, request: Any, context: Any) -> pb.RegisterDeviceResponse:
            return pb.RegisterDeviceResponse(device_id="d", device_token="t" * 32)

    with serving(Echo(), ip) as address:
        client = ServerClient(address, work / "state-tls", app_id="com.a", user_id="u", timeout=3.0)
        with client:
            return outcome(lambda: f"registered in plaintext with {address}: {client.register()}")


def attacks_on_manifests(source: Path, work: Path) -> dict[str, str]:
    """Hostile manifests and ids: every failure should be an SDKError naming the problem."""
    from autohas_edge.device_sdk import Manifest

    base = json.loads((source / MANIFEST).read_text())

    def edited(edit: Callable[[dict], None]) -> str:
        manifest = json.loads(json.dumps(base))
        edit(manifest)
        return json.dumps(manifest)

    def parse(text: str) -> str:
        Manifest.from_json(text)
        return "accepted"

    hub = Hub(work / "h-ids", **({"allow_unsigned": True} if new_api() else {}))
    nested = Path(shutil.copytree(source, work / "nested"))
    (nested / "a").write_bytes(b"x")
    entry = {"sha256": "0" * 64, "bytes": 1}
    (nested / MANIFEST).write_text(edited(lambda m: m["files"].update({"a": entry, "a/b": entry})))
    return {
        "model id ../..": outcome(lambda: hub.install(source, TASK, model_id="../..")),
        "manifest nested 100000 deep": outcome(lambda: parse("[" * 100_000 + "]" * 100_000)),
        "files a and a/b in one bundle": outcome(lambda: hub.install(nested, TASK) and "installed"),
        "fine_tuning.epochs = 1e12": outcome(
            lambda: parse(edited(lambda m: m["fine_tuning"]["hyperparameters"].update(epochs=1e12)))
        ),
        "input shape [1, 2**40]": outcome(
            lambda: parse(edited(lambda m: m["input"].update(shape=["batch", 1, 2**40])))
        ),
        "reference.file ../../outside.npz": outcome(
            lambda: parse(edited(lambda m: m["reference"].update(file="../../outside.npz")))
        ),
    }


def state_permissions(work: Path) -> str:
    old = os.umask(0o022)
    try:
        state = work / "state-perm"
        with ServerClient("127.0.0.1:1", state, app_id="com.a", user_id="u") as client:
            client.outbox.set("device_token", "secret")
            modes = {
                p.name.split(".", 1)[-1]: oct(stat.S_IMODE(p.stat().st_mode))
                for p in state.iterdir()
            }
        return f"directory {oct(stat.S_IMODE(state.stat().st_mode))}, files {modes}"
    finally:
        os.umask(old)


TELEMETRY = (
    "import sys, numpy as np\n"
    "from autohas_edge.device_sdk import Hub\n"
    "import inspect\n"
    "kw = {'allow_unsigned': True} if 'allow_unsigned' in inspect.signature(Hub).parameters else {}\n"
    "hub = Hub(sys.argv[1], **kw); hub.install(sys.argv[2], 't', formats=['onnx'])\n"
    "m = hub.model('t', app_id='a'); m.predict(np.zeros(m.input_shape, np.float32))\n"
)


def telemetry(source: Path, work: Path) -> str:
    home = work / "home"
    home.mkdir()
    drop = {"ORT_DISABLE_TELEMETRY", "CI", "ORT_RUNNING_UNIT_TESTS", "XDG_CACHE_HOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"HOME": str(home)}
    run = subprocess.run(
        [sys.executable, "-c", TELEMETRY, str(work / "h-tel"), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode:
        return f"script failed: {run.stderr.strip().splitlines()[-1]}"
    found = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    return f"files under $HOME: {found or 'none'}"


def main(argv: list[str] | None = None) -> int:
    """Run every attack and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="an exported bundle directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="autohas-attacks-") as tmp:
        work = Path(tmp)
        keys = Keys(work)
        source = Path(shutil.copytree(args.bundle, work / "source"))
        (source / "signature.json").unlink(missing_ok=True)
        results = {"SDK": "new (signatures)" if new_api() else "old (no signatures)"}
        results |= attacks_on_bundles(source, work, keys)
        results["server declares a 1 TB file"] = attack_terabyte(source, work, keys)
        results["server sends 3 MiB past a file's declared size"] = attack_overflow(
            source, work, keys
        )
        results["stale .part of another model"] = attack_stale_part(work, keys, source)
        results["plaintext server on a non-loopback address"] = attack_tls(work)
        results |= attacks_on_manifests(source, work)
        results["state database (umask 022)"] = state_permissions(work)
        results["onnxruntime telemetry"] = telemetry(source, work)
    for name, result in results.items():
        print(f"{name}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
