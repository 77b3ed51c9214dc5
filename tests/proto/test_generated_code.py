"""The committed generated code must be exactly what `make proto` produces."""

from autohas_edge.proto import generate


def test_generated_code_is_up_to_date() -> None:
    assert generate.proto_files(), "no .proto files found"
    assert generate.check() == []


def test_generated_modules_import_and_name_the_package() -> None:
    from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb

    assert pb.DESCRIPTOR.package == "autohas.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"DeviceService", "OperatorService"}
