from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.topics import TopicError, Topics
from core.wire import Topics as WireTopics


def test_topic_names() -> None:
    t = Topics("lab-north", "edge_01")
    assert t.runs == "microplate/v1/lab-north/edge_01/runs"
    assert t.acks == "microplate/v1/lab-north/edge_01/acks"
    assert t.status == "microplate/v1/lab-north/edge_01/status"
    assert t.config == "microplate/v1/lab-north/edge_01/config"
    assert WireTopics is Topics and t == Topics("lab-north", "edge_01")


@pytest.mark.parametrize(
    "bad", ["", "a/b", "+", "#", "a+", "x#", "a\x00", "-lead", "sp ace", "x" * 65, "é"]
)
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        Topics(bad, "dev")
    with pytest.raises(TopicError):
        Topics("site", bad)


def test_subscriptions_and_parse() -> None:
    assert Topics.subscription("runs") == "microplate/v1/+/+/runs"
    assert Topics.subscription("status", site="lab") == "microplate/v1/lab/+/status"
    assert Topics.parse("microplate/v1/lab/edge-1/acks") == ("lab", "edge-1", "acks")
    for bad in ["microplate/v1/lab/edge-1", "microplate/v2/a/b/runs", "microplate/v1/a/b/logs"]:
        with pytest.raises(TopicError):
            Topics.parse(bad)


@settings(max_examples=200, deadline=None)
@given(site=st.text(max_size=70), device=st.text(max_size=70))
def test_any_accepted_id_makes_a_four_level_topic(site: str, device: str) -> None:
    try:
        topics = Topics(site, device)
    except TopicError:
        return
    for leaf in ("runs", "acks", "status", "config"):
        topic = topics.topic(leaf)  # type: ignore[arg-type]
        assert not set("+#\x00") & set(topic)
        assert Topics.parse(topic) == (site, device, leaf)
