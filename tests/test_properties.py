"""Property tests: malformed and reordered AMI input never breaks the parser or the assembler.

Whatever arrives, no exception escapes, and once enough time has passed nothing stays open.
"""

from __future__ import annotations

import random
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.assembly import CallAssembler
from connector.events import (
    AmiEvent,
    MalformedMessage,
    MessageFramer,
    is_journal_message,
    normalize,
    parse_message,
)
from tests.scenarios import capture, events_of, new_assembler

LONG_AFTER = 10 * 24 * 3600.0
EVENT_NAMES = [
    "Newchannel",
    "Newstate",
    "Hangup",
    "DialBegin",
    "DialEnd",
    "BridgeCreate",
    "BridgeEnter",
    "BridgeLeave",
    "BridgeDestroy",
    "Pickup",
    "AttendedTransfer",
    "BlindTransfer",
    "LocalBridge",
    "LocalOptimizationBegin",
    "AgentConnect",
    "VarSet",
    "MixMonitorStart",
    "Shutdown",
    "Rename",
    "Bogus",
]
HEADER_NAMES = [
    "Uniqueid",
    "Linkedid",
    "Channel",
    "DestUniqueid",
    "DestLinkedid",
    "DestChannel",
    "BridgeUniqueid",
    "BridgeType",
    "TargetUniqueid",
    "TransfererUniqueid",
    "TransfereeUniqueid",
    "TransferTargetUniqueid",
    "OrigTransfererUniqueid",
    "LocalOneUniqueid",
    "LocalTwoUniqueid",
    "LocalOneChannel",
    "LocalTwoChannel",
    "ChannelStateDesc",
    "DialStatus",
    "DialString",
    "Variable",
    "Value",
    "CallerIDNum",
    "Newname",
    "Queue",
]
IDS = ["1.1", "1.2", "1.3", "2.1", "2.2", ""]
CHANNELS = [
    "PJSIP/101-0001",
    "PJSIP/102-0002",
    "IAX2/provider-9",
    "Local/104@from-internal-0001;1",
    "Local/104@from-internal-0001;2",
    "",
    "garbage",
]


def settle(assembler: CallAssembler, last: float) -> None:
    assembler.expire(last + LONG_AFTER)
    assert assembler.open_conversations == 0
    assert assembler.open_channels == 0


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_framer_and_parser_survive_arbitrary_bytes(chunks: list[bytes]) -> None:
    framer = MessageFramer(max_message_bytes=2048)
    for chunk in chunks:
        for raw in framer.feed(chunk):
            if not is_journal_message(raw):
                continue
            try:
                message = parse_message(raw)
                if message.event:
                    normalize(message, 0.0)
            except MalformedMessage:
                pass
    assert framer.pending <= 2048 + 300


header_value = st.one_of(
    st.sampled_from(IDS),
    st.sampled_from(CHANNELS),
    st.sampled_from(
        ["basic", "holding", "Ringing", "Up", "ANSWER", "CANCEL", "MIXMONITOR_FILENAME"]
    ),
    st.text(max_size=12),
)
generated_event = st.builds(
    lambda name, headers, time: AmiEvent(name=name, time=time, headers=dict(headers)),
    st.sampled_from(EVENT_NAMES),
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=10),
    st.floats(min_value=0, max_value=1000, allow_nan=False),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(generated_event, max_size=60))
def test_assembler_survives_generated_events(events: list[AmiEvent]) -> None:
    assembler = new_assembler()
    last = 0.0
    for event in events:
        last = max(last, event.time)
        assembler.feed(event, last)
    settle(assembler, last)


@cache
def real_events(slug: str) -> tuple[AmiEvent, ...]:
    return tuple(events_of(capture(slug).read_bytes()))


SLUGS = [
    "02-incoming-ringgroup-102-answers",
    "11-incoming-blind-transfer",
    "12-incoming-attended-transfer",
    "13-incoming-pickup-by-105",
    "16-ivr-localchannel-to-102",
    "18-click-to-call-originate",
]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    slug=st.sampled_from(SLUGS),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    drop=st.floats(min_value=0, max_value=0.5),
    swap=st.floats(min_value=0, max_value=0.5),
    corrupt=st.floats(min_value=0, max_value=0.3),
)
def test_assembler_survives_real_calls_dropped_reordered_corrupted(
    slug: str, seed: int, drop: float, swap: float, corrupt: float
) -> None:
    rng = random.Random(seed)
    events = [e for e in real_events(slug) if rng.random() >= drop]
    for i in range(len(events) - 1):
        if rng.random() < swap:
            events[i], events[i + 1] = events[i + 1], events[i]
    mangled = []
    for event in events:
        if rng.random() < corrupt:
            headers = dict(event.headers)
            key = rng.choice(list(headers))
            headers[key] = rng.choice(["", "<garbage>", "1.1", *IDS])
            mangled.append(AmiEvent(name=event.name, time=event.time, headers=headers))
        else:
            mangled.append(event)
    assembler = new_assembler()
    last = 0.0
    calls = []
    for event in mangled:
        last = max(last, event.time)
        calls.extend(assembler.feed(event, last))
    settle(assembler, last)
    # Whatever survived, every row that came out is internally consistent.
    for call in calls:
        assert call.ended_at >= call.started_at
        assert call.talk_seconds >= 0 and call.ring_seconds >= 0
        assert len({p.extension for p in call.participants}) == len(call.participants)
