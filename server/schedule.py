"""Subscriptions: how often an item is checked again, and when its next check is due.

An interval is written as seconds (``3600``) or a number with a unit (``30m``, ``6h``,
``1d``, ``2w``): in the inventory's ``check_every`` column, in a site's
``check_every`` and in the global ``CHECK_EVERY``. Empty or None: checked once.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: A second is the clock's grain (tests check that often; a real site would rather not be);
#: less often than a year is "once" with extra steps.
MIN_INTERVAL, MAX_INTERVAL = 1, 366 * 86400
#: A check comes due at its interval, moved by up to this share either way, so the items
#: of one big import do not all come due in the same second.
JITTER = 0.1
_INTERVAL = re.compile(r"(\d{1,12})\s*([a-z]?)")


def parse_interval(value: str | int | None) -> int | None:
    """Seconds, or None for "once"; ValueError naming the problem otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be seconds or a number with a unit ({', '.join(UNITS)}), got {value!r}")
    if isinstance(value, int):
        seconds = value
    else:
        match = _INTERVAL.fullmatch(value.strip().lower())
        if match is None or (match.group(2) and match.group(2) not in UNITS):
            raise ValueError(f"must be seconds or a number with a unit ({', '.join(UNITS)}), got {value!r}")
        seconds = int(match.group(1)) * UNITS[match.group(2) or "s"]
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(f"must be from {MIN_INTERVAL} second to {MAX_INTERVAL // 86400} days, got {value!r}")
    return seconds


def next_check(now: datetime, interval: int, rng: random.Random | None = None) -> datetime:
    """When a check done ``now`` comes due again."""
    spread = (rng or random).uniform(-JITTER, JITTER)
    return now + timedelta(seconds=interval * (1 + spread))
