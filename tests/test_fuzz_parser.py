"""A short run of the AMI input fuzzer (bench/fuzz_parser.py), so that it cannot rot.

The full run (``python -m bench.fuzz_parser``, 200,000 messages) is issue 6's evidence; here a
few thousand hostile messages go through the framer, the parser, the transport's routing and
the assembler: nothing but MalformedMessage escapes, and nothing stays open afterwards.
"""

from __future__ import annotations

from bench.fuzz_parser import KINDS, fuzz


async def test_hostile_input_never_escapes_and_nothing_stays_open() -> None:
    report = await fuzz(6000, seed=11)
    assert report.escaped == []
    assert report.left_open == (0, 0)
    assert sum(report.units.values()) >= 6000
    assert set(report.units) == set(KINDS)
    assert report.malformed_parse > 0 and report.transport_shutdowns > 0
    assert report.events_fed > 1000
