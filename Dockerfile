# Image for the notifier worker (and, with another command, Celery beat).
#   docker compose build && docker compose up
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them.
# README.md* matches nothing if the README is absent; setuptools then only warns.
COPY pyproject.toml README.md* ./
RUN mkdir notifier && touch notifier/__init__.py \
    && pip install . \
    && pip uninstall --yes notifier \
    && rm -rf notifier build ./*.egg-info

# The project itself. `pip install .` puts only the notifier package into site-packages;
# the conference files and templates stay here, and the settings below point at them.
COPY notifier ./notifier
RUN pip install --no-deps . && rm -rf build ./*.egg-info
COPY worker.py ./
COPY conferences ./conferences
COPY templates ./templates
COPY schema ./schema
COPY examples ./examples

ENV NOTIFIER_CONFERENCES_DIR=/app/conferences \
    NOTIFIER_TEMPLATES_DIR=/app/templates

# Run as an unprivileged user that cannot change the code. /var/lib/notifier is its only
# writable place (Celery beat's schedule file; a volume in docker-compose.yml).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/notifier --create-home \
        --shell /usr/sbin/nologin notifier
USER notifier

CMD ["notifier", "worker", "--loglevel=INFO"]
