"""notifier: Danish conference mail with calendar invites, driven by events on a Celery queue."""

__version__ = "0.1.0"
