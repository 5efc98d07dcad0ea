"""Hypothesis strategies for the channel core's types, shared by the message and frame tests."""

from __future__ import annotations

from datetime import UTC

from hypothesis import strategies as st

from gateway.ticket import ConversationMessage

conversation_messages = st.builds(
    ConversationMessage,
    direction=st.sampled_from(["in", "out"]),
    id=st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True),
    at=st.datetimes(timezones=st.just(UTC)),
    text=st.text(max_size=200),
    status=st.none() | st.sampled_from(["queued", "sent", "delivered", "failed"]),
    reason=st.text(max_size=60),
)
