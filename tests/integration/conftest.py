"""Fixtures of the integration tests: a Service on the test Redis and SMTP sink, with a clock
the test moves by hand (for what it composes and for the store's leases and retry times)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis

from notifier.service import Service
from notifier.settings import Settings
from tests.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 2, 14, 9, 0, tzinfo=UTC))


@pytest.fixture
def service(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, clock: Clock
) -> Iterator[Callable[..., Service]]:
    """Factory: a Service; keyword arguments override NOTIFIER_* settings."""
    made: list[Service] = []

    def make(**overrides: str) -> Service:
        svc = Service(
            make_settings(**overrides),
            redis_client,
            clock=clock,
            rand=lambda: 0.0,
            store_clock=lambda: clock().timestamp(),
        )
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()
