"""Format names: parsing, canonical order, bundle file names."""

from __future__ import annotations

import pytest

from autohas_edge.export import ALL_FORMATS, ExportError, parse_formats


def test_parse_formats_canonical_order_and_files() -> None:
    formats = parse_formats("tflite-int8, onnx")
    assert [f.name for f in formats] == ["onnx", "tflite-int8"]
    assert [f.file("features") for f in formats] == ["features.onnx", "features_int8.tflite"]
    assert [f.name for f in parse_formats(ALL_FORMATS)] == [
        "onnx",
        "tflite",
        "onnx-int8",
        "tflite-int8",
    ]


@pytest.mark.parametrize("spec", ["onnx,coreml", "", "tflite_int8"])
def test_bad_format_is_a_one_line_error_naming_the_option(spec: str) -> None:
    with pytest.raises(ExportError) as info:
        parse_formats(spec)
    message = str(info.value)
    assert message.startswith("--formats: ") and "\n" not in message
    assert "choose from onnx, tflite, onnx-int8, tflite-int8" in message
