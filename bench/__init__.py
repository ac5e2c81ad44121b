"""The throughput benchmark of issue 7: `python -m bench [--quick]` (see bench/__main__.py).

It measures, in one run against one SMTP sink: the raw-send ceiling, a pretix-style
per-mail sender, and notifier end to end through Redis and a real Celery worker.
"""
