"""A registration's events apply in publication order.

When an ingest task leaves the broker's queue, store/scripts/pop.lua numbers it and adds the
number to its registration's pending set (keys.registration_pending), in one step. A task
applies its event once no lower number of its registration is pending, and takes its number
out when it is done, whatever happened. The wait is bounded: a task whose worker died stays
pending until it comes back, and the events after it do not wait for that forever (the
seat's state is still its facts in time order, so it ends the same).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger("notifier")

FIRST_PAUSE = 0.002  # seconds: an earlier event of the registration is usually being applied
MAX_PAUSE = 0.05


def wait_turn(
    client: redis.Redis,
    key: str,
    number: int,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until no number below `number` is pending in `key`: True when it is this
    task's turn, False when the wait gave up after `timeout` seconds."""
    deadline = clock() + timeout
    pause = FIRST_PAUSE
    while True:
        first: list[bytes] = client.zrange(key, 0, 0)  # type: ignore[assignment]
        if not first or int(first[0]) >= number:
            return True
        if clock() >= deadline:
            return False
        sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


@contextmanager
def in_turn(client: redis.Redis, key: str, number: int, timeout: float) -> Iterator[None]:
    """Run the block in this task's turn; its number leaves the pending set afterwards,
    also when the block fails (a retried task is numbered anew)."""
    try:
        if not wait_turn(client, key, number, timeout):
            log.warning(
                "an earlier event of the same registration is still pending after %.0f s; "
                "applying event number %d now",
                timeout,
                number,
            )
        yield
    finally:
        client.zrem(key, number)
