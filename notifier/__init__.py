"""notifier: Danish conference mail with calendar invites, driven by events on a Celery queue.

The public surface, for registration systems that publish events and for integrators that
host the worker or read delivery status. Everything else in the package may change without
notice. Each module below declares its part in `__all__`, and every name is also reachable
from here (``from notifier import parse_event``), loaded on first use:

``notifier.tasks``
    ``create_app(settings)``, the Celery app; the queue ``QUEUE`` and the task names
    ``INGEST`` (publish events to it), ``DELIVER``, ``SCHEDULE``, ``PURGE``.
``notifier.domain.events``
    ``parse_event`` and the event models (``Event``, ``RegistrationCreated``,
    ``RegistrationSubstituted``, ``RegistrationCancelled``, ``ReminderRequested``,
    ``ConferenceUpdated`` and their parts), ``event_schema()``, ``EVENT_TYPES``,
    ``MAX_EVENT_BYTES``.
``notifier.settings``
    ``Settings`` and ``load_settings(environ)``.
``notifier.store.status``
    ``status(client, batch)``, returning ``Status`` (with ``Failure`` rows).
``notifier.errors``
    the error tree, ``NotifierError`` and its subclasses.

Importing ``notifier`` (or ``notifier.domain.events``) loads neither Celery nor Redis: a
producer that only validates events need not have a worker's dependencies loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives (tests check this against the modules' own `__all__`).
_HOME: dict[str, str] = {
    **dict.fromkeys(
        ("DELIVER", "INGEST", "PURGE", "QUEUE", "SCHEDULE", "create_app"), "notifier.tasks"
    ),
    **dict.fromkeys(
        (
            "EVENT_TYPES",
            "MAX_EVENT_BYTES",
            "Attendee",
            "Batch",
            "ConferenceUpdated",
            "Event",
            "NewRegistration",
            "RegistrationCancelled",
            "RegistrationCreated",
            "RegistrationRef",
            "RegistrationSubstituted",
            "ReminderRequested",
            "Substitution",
            "event_schema",
            "parse_event",
        ),
        "notifier.domain.events",
    ),
    **dict.fromkeys(("Settings", "load_settings"), "notifier.settings"),
    **dict.fromkeys(("Failure", "Status", "status"), "notifier.store.status"),
    **dict.fromkeys(
        (
            "BrokerUnavailable",
            "ConferenceCancelled",
            "ConfigError",
            "DeliveryError",
            "DeliveryUnknown",
            "InvalidEvent",
            "MailboxUnavailable",
            "NotifierError",
            "PermanentDeliveryError",
            "StoreUnavailable",
            "TemporaryDeliveryError",
            "UnknownBatch",
            "UnknownRegistration",
        ),
        "notifier.errors",
    ),
}

__all__ = [
    "DELIVER",
    "EVENT_TYPES",
    "INGEST",
    "MAX_EVENT_BYTES",
    "PURGE",
    "QUEUE",
    "SCHEDULE",
    "Attendee",
    "Batch",
    "BrokerUnavailable",
    "ConferenceCancelled",
    "ConferenceUpdated",
    "ConfigError",
    "DeliveryError",
    "DeliveryUnknown",
    "Event",
    "Failure",
    "InvalidEvent",
    "MailboxUnavailable",
    "NewRegistration",
    "NotifierError",
    "PermanentDeliveryError",
    "RegistrationCancelled",
    "RegistrationCreated",
    "RegistrationRef",
    "RegistrationSubstituted",
    "ReminderRequested",
    "Settings",
    "Status",
    "StoreUnavailable",
    "Substitution",
    "TemporaryDeliveryError",
    "UnknownBatch",
    "UnknownRegistration",
    "create_app",
    "event_schema",
    "load_settings",
    "parse_event",
    "status",
]

if TYPE_CHECKING:  # for type checkers only: at run time these load on first use
    from notifier.domain.events import (
        EVENT_TYPES,
        MAX_EVENT_BYTES,
        Attendee,
        Batch,
        ConferenceUpdated,
        Event,
        NewRegistration,
        RegistrationCancelled,
        RegistrationCreated,
        RegistrationRef,
        RegistrationSubstituted,
        ReminderRequested,
        Substitution,
        event_schema,
        parse_event,
    )
    from notifier.errors import (
        BrokerUnavailable,
        ConferenceCancelled,
        ConfigError,
        DeliveryError,
        DeliveryUnknown,
        InvalidEvent,
        MailboxUnavailable,
        NotifierError,
        PermanentDeliveryError,
        StoreUnavailable,
        TemporaryDeliveryError,
        UnknownBatch,
        UnknownRegistration,
    )
    from notifier.settings import Settings, load_settings
    from notifier.store.status import Failure, Status, status
    from notifier.tasks import DELIVER, INGEST, PURGE, QUEUE, SCHEDULE, create_app


def __getattr__(name: str) -> Any:
    # Lazy, so that `import notifier.domain.events` does not load Celery and Redis through
    # this package's __init__.
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'notifier' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # found once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
