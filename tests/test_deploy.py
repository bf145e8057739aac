"""The deployment files stay in step with the code: the same config, valid YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import parse_config

REPO = Path(__file__).resolve().parent.parent


def test_kubernetes_configmap_carries_the_shipped_config() -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy/kubernetes/configmap.yaml").read_text()))
    embedded = docs[0]["data"]["config.yaml"]
    assert embedded == (REPO / "config.yaml").read_text()
    parse_config(embedded, {})  # and it is a valid config


def test_every_deploy_file_is_valid_yaml_with_known_env_names() -> None:
    files = [*sorted((REPO / "deploy").rglob("*.yml")), *sorted((REPO / "deploy").rglob("*.yaml"))]
    assert len(files) >= 7
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    compose = yaml.safe_load((REPO / "deploy/docker-compose.yml").read_text())
    env = compose["services"]["gateway"]["environment"]
    names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
    shipped = (REPO / "config.yaml").read_text()
    for name in names - {"GATEWAY_CONFIG"}:
        assert "${" + name in shipped, f"compose sets {name}, which config.yaml never reads"
