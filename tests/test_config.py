"""Config: interpolation, strict keys and types with line numbers, and `gateway check-config`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
providers:
  mock: {type: mock, models: [demo]}
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env or {})
    return info.value.errors


def test_defaults_fill_everything_not_given() -> None:
    config = parse_config(MINIMAL, {})
    assert config.server.port == 8080
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.auth.api_keys == ()
    assert config.routing.default_model == "demo"
    assert config.providers["mock"].models == ("demo",)


def test_env_interpolation_with_defaults_and_type_conversion() -> None:
    text = """
    server: {port: "${PORT:-9000}", host: "${HOST}"}
    auth: {api_keys: "${KEYS:-}"}
    providers:
      openai: {type: openai, base_url: "${BASE:-https://api.openai.com/v1}", api_key: "${KEY}",
               models: ["${MODEL:-gpt-4o-mini}"]}
      mock: {type: mock, models: [demo]}
    """
    config = parse_config(
        textwrap.dedent(text), {"HOST": "0.0.0.0", "KEYS": "a, b,,c", "KEY": "sk-1"}
    )
    assert config.server.port == 9000 and config.server.host == "0.0.0.0"
    assert config.auth.api_keys == ("a", "b", "c")
    assert config.providers["openai"].api_key == "sk-1"
    assert config.providers["openai"].models == ("gpt-4o-mini",)
    overridden = parse_config(textwrap.dedent(text), {"PORT": "7001", "MODEL": "gpt-4o"})
    assert overridden.server.port == 7001
    assert overridden.providers["openai"].models == ("gpt-4o",)
    assert overridden.auth.api_keys == ()


def test_unknown_keys_are_errors_with_path_and_line() -> None:
    errors = errors_of(
        """
        server:
          port: 8080
          max_body: 10
        providers:
          mock: {type: mock, models: [demo], colour: blue}
        """
    )
    assert any(e.startswith("server.max_body: unknown key") and "(line 4)" in e for e in errors)
    assert any(
        e.startswith("providers.mock.colour: unknown key") and "(line 6)" in e for e in errors
    )


def test_wrong_types_are_errors_with_path_and_line() -> None:
    errors = errors_of(
        """
        server:
          port: eighty
          workers: [1]
        logging: {format: xml, access_log: maybe}
        providers:
          mock: {type: mock, models: [demo]}
        """
    )
    joined = "\n".join(errors)
    assert "server.port: expected an integer, got 'eighty' (line 3)" in joined
    assert "server.workers: expected an integer, got a list (line 4)" in joined
    assert "logging.format: must be one of json, console, got 'xml' (line 5)" in joined
    assert "logging.access_log: expected a boolean" in joined
    # Once the shape is right, the checks that span keys run.
    errors = errors_of(
        """
        providers:
          mock: {type: mock, models: [demo]}
          cloud: {type: openai, base_url: "ftp://x", timeouts: {read: -1}}
          basic: {type: ollama, base_url: "http://user:pw@127.0.0.1:1", models: [x]}
        """
    )
    assert any(e.startswith("providers.basic.base_url: must not carry a user") for e in errors)
    assert "providers.cloud.base_url: must be an http(s) URL, got 'ftp://x' (line 4)" in errors
    assert "providers.cloud.timeouts.read: must be positive, got -1.0 (line 4)" in errors


def test_env_values_are_type_checked_too() -> None:
    errors = errors_of("server: {port: '${PORT}'}\n" + MINIMAL, {"PORT": "http"})
    assert errors == ["server.port: expected an integer, got 'http' (line 1)"]


def test_model_names_are_checked_across_providers_and_aliases() -> None:
    errors = errors_of(
        """
        providers:
          a: {type: mock, models: [demo]}
          b: {type: mock, models: [demo]}
        aliases: {fast: "c:model", auto: demo}
        routing: {default_model: nothing}
        """
    )
    joined = "\n".join(errors)
    assert "providers.b.models: 'demo' is also listed by provider 'a'" in joined
    assert "aliases.fast: 'c:model' is not a configured model" in joined
    assert "aliases.auto: 'auto' is reserved" in joined
    assert "routing.default_model: 'nothing' is not a configured model" in joined


def test_missing_required_key_and_bad_yaml() -> None:
    assert any(
        "providers.x.type: required key is missing" in e for e in errors_of("providers: {x: {}}")
    )
    assert errors_of("server: [")[0].startswith("not valid YAML")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_check_config_prints_the_resolved_config_with_secrets_masked() -> None:
    env = {
        "OPENAI_API_KEY": "sk-live-supersecretvalue",
        "GATEWAY_API_KEYS": "client-key-one,client-key-two",
        "REDIS_URL": "redis://:hunter2@redis.internal:6379/0",
        "OLLAMA_MODEL": "qwen2.5:7b",
    }
    result = run_cli("check-config", "config.yaml", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("supersecretvalue", "client-key-one", "client-key-two", "hunter2"):
        assert secret not in out
    assert "redis://***@redis.internal:6379/0" in out
    assert "- qwen2.5:7b" in out and "local: ollama:qwen2.5:7b" in out


def test_check_config_exits_1_naming_each_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "server:\n  port: 99999\n  prot: 1\nproviders:\n  mock: {type: mock, models: [demo]}\n"
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "server.prot: unknown key" in result.stderr and "(line 3)" in result.stderr
    assert "server.port: must be between 1 and 65535, got 99999 (line 2)" in result.stderr
    missing = run_cli("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read config file" in missing.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("logging: {level: loud}\n")
    result = run_cli("serve", "--config", str(bad), "--port", "1")
    assert result.returncode == 1
    assert "logging.level: must be one of debug, info, warning, error" in result.stderr
