"""The one id grammar: every id gets its own safe directory name, and back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autohas_edge.common.ids import (
    ID_PATTERN,
    MAX_COMPONENT,
    check_id,
    component_to_id,
    id_to_component,
)

ids = st.from_regex(ID_PATTERN, fullmatch=True)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%-]*")


@settings(max_examples=300)
@given(ident=ids)
def test_every_id_has_a_safe_name_that_decodes_back(ident: str) -> None:
    name = id_to_component(ident)
    assert SAFE_NAME.fullmatch(name) and ".." not in name and len(name) <= MAX_COMPONENT
    assert component_to_id(name) in (ident, None)
    if len(ident) <= 50:  # only cut (very long, escaped) names lose the way back
        assert component_to_id(name) == ident


@settings(max_examples=300)
@given(a=ids, b=ids)
def test_different_ids_get_different_names(a: str, b: str) -> None:
    assert (id_to_component(a) == id_to_component(b)) == (a == b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("team/gestures", "team:gestures"),
        ("a.b", "a..b"),
        ("x" + "/" * 127, "x" + "/" * 126 + ":"),  # both cut: the hash tells them apart
    ],
)
def test_near_ids_do_not_collide(a: str, b: str) -> None:
    assert id_to_component(a) != id_to_component(b)


def test_plain_ids_are_their_own_name() -> None:
    # the names a device store used before ids could hold "/" or ":"
    for ident in ("gestures", "com.example.keyboard", "model-1_2", "sha256-0a1b"):
        assert id_to_component(ident) == ident == component_to_id(ident)
    assert id_to_component("team/gestures:v2") == "team%2Fgestures%3Av2"


@pytest.mark.parametrize(
    "bad", ["", "..", "../escape", "/etc/passwd", ".hidden", "a\\b", "a b", "é", "x" * 129, None]
)
def test_what_is_not_an_id_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match="task_id"):
        id_to_component(bad, "task_id")
    with pytest.raises(ValueError, match="app_id"):
        check_id(bad, "app_id")
