"""Every log line's UTC stamp (reports.now_iso) reads as datetime formats it, to the millisecond."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from bepbuild_runtime import reports


def _datetime_stamp(t: float) -> str:
    stamp = datetime.fromtimestamp(t, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def test_stamps_match_datetime_including_the_carry_into_the_next_second() -> None:
    edges = [0.0, 0.0004, 0.9995, 1.9999996, 59.9999999, 1764590399.9999996, 1764590400.0000004, 951782399.999]
    rng = random.Random(7)
    values = edges + [rng.uniform(0, 4e9) for _ in range(5000)]
    for t in values + sorted(values):  # in and out of order: the cached second never leaks into another
        assert reports.now_iso(t) == _datetime_stamp(t), t
    assert reports.now_iso(1764590399.9999996) == "2025-12-01T12:00:00.000Z"
