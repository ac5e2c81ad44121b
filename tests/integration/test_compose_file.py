"""docker-compose.yml and the Dockerfile, checked statically (no Docker needed).

Docker does not run on every developer machine or in CI, so these tests read the files and
hold them to what the worker needs: the services, Redis durability, settings that
notifier.settings accepts, start-up order, and an image that contains the project.
"""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from notifier.settings import PREFIX, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_SERVICES = ("worker", "beat")


# ---- reading the files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict), "docker-compose.yml must be a mapping"
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    for name, service in found.items():
        assert isinstance(service, dict), f"service {name} must be a mapping"
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the list form."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {key: value for key, _, value in pairs}
    assert isinstance(raw, dict), "environment must be a mapping or a list"
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _command(service: dict[str, Any]) -> list[str]:
    """A service's command as argv, from either the string or the list form."""
    raw = service.get("command", [])
    if isinstance(raw, str):
        return shlex.split(raw)
    assert isinstance(raw, list), "command must be a string or a list"
    return [str(arg) for arg in raw]


def _container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes, from short ("[ip:]host:container") or long syntax."""
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    result = []
    for text in logical:
        instruction, _, args = text.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in _dockerfile_instructions():
        if instruction == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _shell_commands(run_args: str) -> list[list[str]]:
    """The simple commands of a RUN line, split on && and ;."""
    commands: list[list[str]] = [[]]
    for token in shlex.split(run_args):
        if token in ("&&", ";", "||"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


# ---- services ---------------------------------------------------------------------------------


def test_compose_defines_the_four_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "worker", "mailpit", "beat"} <= services.keys()


def test_redis_is_durable_with_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    argv = _command(services["redis"])
    assert argv[:1] == ["redis-server"]
    joined = " ".join(argv)
    assert "--appendonly yes" in joined
    assert "--appendfsync everysec" in joined
    volumes = [str(v) for v in services["redis"].get("volumes", [])]
    assert any(v.split(":")[1:2] == ["/data"] for v in volumes), "redis needs a volume for /data"


def test_redis_has_a_ping_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    healthcheck = services["redis"].get("healthcheck")
    assert isinstance(healthcheck, dict), "redis has no healthcheck"
    test = healthcheck["test"]
    argv = test[1:] if isinstance(test, list) else shlex.split(str(test))
    assert argv[:2] == ["redis-cli", "ping"]


def test_mailpit_exposes_web_ui_and_smtp(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["mailpit"]["image"]).startswith("axllent/mailpit")
    assert {8025, 1025} <= _container_ports(services["mailpit"])


# ---- worker and beat settings -----------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_notifier_variable_is_a_setting(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    ours = {key for key in _environment(services[name]) if key.startswith(PREFIX)}
    assert ours, f"{name} sets no NOTIFIER_* variables"
    assert ours <= known, f"{name}: not settings: {sorted(ours - known)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_is_accepted_by_load_settings(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    # What the container sees: the image's ENV, overridden by the compose environment.
    env = {**_dockerfile_env(), **_environment(services[name])}
    settings = load_settings(env)
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.redis_url == settings.broker_url
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("mailpit", 1025, "none")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_hostnames_name_compose_services(services: dict[str, dict[str, Any]], name: str) -> None:
    settings = load_settings({**_dockerfile_env(), **_environment(services[name])})
    assert urlsplit(settings.broker_url).hostname in services
    assert settings.smtp_host in services


def test_worker_and_beat_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    assert _environment(services["worker"]) == _environment(services["beat"])


def test_worker_waits_for_healthy_redis(services: dict[str, dict[str, Any]]) -> None:
    depends = services["worker"].get("depends_on")
    assert isinstance(depends, dict), "worker depends_on must use the long form with conditions"
    assert depends["redis"]["condition"] == "service_healthy"
    assert "mailpit" in depends


def test_worker_runs_notifier_worker(services: dict[str, dict[str, Any]]) -> None:
    argv = _command(services["worker"])
    assert argv[:2] == ["notifier", "worker"]
    assert "--loglevel=INFO" in argv


def test_beat_runs_celery_beat_on_the_worker_app(services: dict[str, dict[str, Any]]) -> None:
    argv = _command(services["beat"])
    assert argv[:4] == ["celery", "-A", "worker", "beat"]
    # The same image as the worker, built from the Dockerfile.
    assert services["beat"].get("image") == services["worker"].get("image")
    assert services["worker"].get("build") is not None


# ---- the image --------------------------------------------------------------------------------


def test_dockerfile_builds_on_python_311_slim() -> None:
    assert DOCKERFILE.is_file()
    froms = [args for instruction, args in _dockerfile_instructions() if instruction == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim"


def test_dockerfile_installs_the_project_after_copying_it() -> None:
    copied_package = False
    installed = False
    for instruction, args in _dockerfile_instructions():
        if instruction == "COPY" and args.split()[0] == "notifier":
            copied_package = True
        if instruction == "RUN" and copied_package:
            installed |= any(
                cmd[:2] == ["pip", "install"] and "." in cmd for cmd in _shell_commands(args)
            )
    assert copied_package, "the Dockerfile never copies the notifier package"
    assert installed, "no `pip install .` after the package is copied"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for instruction, args in _dockerfile_instructions() if instruction == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_image_has_worker_module_conferences_and_templates() -> None:
    # `pip install .` ships only the notifier package: worker.py (for `celery -A worker`), the
    # conference files and templates must be copied, and the settings must point at them.
    instructions = _dockerfile_instructions()
    workdir = Path(next(args for instruction, args in instructions if instruction == "WORKDIR"))
    copied = {
        args.split()[0]: args.split()[-1]
        for instruction, args in instructions
        if instruction == "COPY"
    }
    assert "worker.py" in copied
    env = _dockerfile_env()
    for source, variable in (("conferences", "conferences_dir"), ("templates", "templates_dir")):
        assert source in copied, f"the Dockerfile does not copy {source}/"
        target = workdir / copied[source]
        assert Path(env[env_name(variable)]) == target


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in patterns and ".git" in patterns
    needed = ["pyproject.toml", "notifier", "worker.py", "conferences", "templates"]
    for name in needed:
        assert not any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is ignored"
