"""Entry point for `celery -A worker worker`: the app built from the NOTIFIER_* environment."""

import os

from notifier.settings import load_settings
from notifier.tasks import create_app

app = create_app(load_settings(os.environ))
