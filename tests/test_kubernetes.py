"""deploy/kubernetes: every kustomization rendered by `kubectl kustomize` and checked.

The base holds core objects only, so it applies to a cluster without the Prometheus Operator;
the Operator's ServiceMonitor and PrometheusRule are the component components/prometheus-operator,
which overlays/operator and the sharded overlays take. The ConfigMap comes from a
configMapGenerator: its name carries a hash of config.yml, so a changed config rolls the pods.
Every rendered core object goes through kubernetes-validate (strict); the Operator's kinds, for
which it has no schema, are skipped there by name and checked field by field below.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.config import parse_config
from exporter.credentials import Credentials
from exporter.listen import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OPERATOR = KUBE / "overlays" / "operator"
SHARDED = KUBE / "overlays" / "sharded"
SHARDED_HA = KUBE / "overlays" / "sharded-ha"
COMPONENT = KUBE / "components" / "prometheus-operator"
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS_RULE = COMPONENT / "prometheusrule.yaml"

# The oldest Kubernetes the manifests are meant for, and a recent one.
KUBE_VERSIONS = ("1.29.0", "1.33.0")
CORE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "StatefulSet",
    "NetworkPolicy",
}
CORE_API_VERSIONS = {"v1", "apps/v1", "networking.k8s.io/v1"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
CONFIG_MAP = "tencent-ci-exporter-config"
# kustomize's name suffix: a hash of the generated ConfigMap's content.
HASHED_CONFIG_MAP = re.compile(rf"{CONFIG_MAP}-[a-z0-9]{{10}}")
Manifest = dict[str, Any]

# Every kustomization is rendered by kubectl below (test_every_kustomization_renders_cleanly);
# these are the ones whose objects the tests look at as a whole.
WITH_OPERATOR = (OPERATOR, SHARDED, SHARDED_HA)
EVERY_RENDERING = (BASE, *WITH_OPERATOR)


# --- kubectl kustomize ----------------------------------------------------------------------

KUSTOMIZE_MAJOR = 5
HOW_TO_INSTALL = (
    "the tests render deploy/kubernetes with `kubectl kustomize` and need kubectl 1.27 or "
    f"later, whose kustomize is v{KUSTOMIZE_MAJOR}: install the `kubectl` package of Kubernetes' "
    "apt repository (https://pkgs.k8s.io/core:/stable:/v1.33/deb/) or the static binary "
    "https://dl.k8s.io/release/v1.33.0/bin/linux/amd64/kubectl on PATH; Debian bookworm's "
    "kubernetes-client is kubectl 1.20, too old"
)
KUBECTL_MISSING = f"kubectl is not installed ({HOW_TO_INSTALL})"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(KUBECTL_MISSING, pytrace=False)
    _check_kustomize_version(found)
    return found


@functools.cache
def _check_kustomize_version(path: str) -> None:
    result = subprocess.run(
        [path, "version", "--client", "--output=json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{path} version --client: {result.stderr}"
    version = json.loads(result.stdout).get("kustomizeVersion", "")
    match = re.fullmatch(r"v(\d+)\.\d+\.\d+", version)
    if match is None or int(match.group(1)) < KUSTOMIZE_MAJOR:
        pytest.fail(
            f"{path} has kustomize {version or 'of unknown version'} ({HOW_TO_INSTALL})",
            pytrace=False,
        )


def kustomize(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize <directory>` renders (a fresh copy each call)."""
    return copy.deepcopy(_kustomized(directory.resolve()))


@functools.cache
def _kustomized(directory: Path) -> list[Manifest]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    shown = _shown(directory)
    assert result.returncode == 0, f"kubectl kustomize {shown} failed:\n{result.stderr}"
    # kustomize warns on stderr about deprecated fields (commonLabels, patchesStrategicMerge...).
    assert not result.stderr.strip(), f"kubectl kustomize {shown} warns:\n{result.stderr}"
    objects = [o for o in yaml.safe_load_all(result.stdout) if o is not None]
    assert objects, f"kubectl kustomize {shown} renders nothing"
    return objects


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def kustomization_files(root: Path = KUBE) -> list[Path]:
    names = ("kustomization.yaml", "kustomization.yml", "Kustomization")
    return sorted(p for name in names for p in root.rglob(name))


def kustomization(directory: Path) -> Manifest:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def kustomizations_of_kind(kind: str) -> list[Path]:
    return [p.parent for p in kustomization_files() if kustomization(p.parent)["kind"] == kind]


KUSTOMIZATIONS = kustomizations_of_kind("Kustomization")
COMPONENTS = kustomizations_of_kind("Component")


def ids(directories: list[Path]) -> list[str]:
    return [str(d.relative_to(KUBE)) for d in directories]


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def operator() -> list[Manifest]:
    return kustomize(OPERATOR)


@pytest.fixture(scope="module")
def sharded() -> list[Manifest]:
    return kustomize(SHARDED)


@pytest.fixture(scope="module")
def sharded_ha() -> list[Manifest]:
    return kustomize(SHARDED_HA)


def renderings(
    directories: tuple[Path, ...] = EVERY_RENDERING,
) -> Iterator[tuple[str, list[Manifest]]]:
    for directory in directories:
        yield str(directory.relative_to(KUBE)), kustomize(directory)


def identity(manifest: Manifest) -> tuple[str, str, str, str]:
    group = manifest["apiVersion"].rpartition("/")[0]
    metadata = manifest["metadata"]
    return group, manifest["kind"], metadata.get("namespace", ""), metadata["name"]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(objects: list[Manifest]) -> list[Manifest]:
    found = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert found
    return found


def workload(objects: list[Manifest]) -> Manifest:
    (only,) = workloads(objects)
    return only


def container(manifest: Manifest) -> dict[str, Any]:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def config_volume(manifest: Manifest) -> dict[str, Any]:
    (volume,) = manifest["spec"]["template"]["spec"]["volumes"]
    assert isinstance(volume, dict)
    return volume


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match is not None
    return match.group(1)


def copy_of_the_manifests(tmp_path: Path) -> Path:
    """deploy/kubernetes copied, for a test to change and render."""
    copied = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copied, ignore=shutil.ignore_patterns("__pycache__"))
    return copied


# --- kubectl, and every kustomization through it -------------------------------------------


def test_a_missing_kubectl_fails_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="kubectl is not installed") as failure:
        kubectl()
    assert "pkgs.k8s.io" in str(failure.value) and "dl.k8s.io" in str(failure.value)


def test_kubectl_has_kustomize_5() -> None:
    kubectl()


def test_every_kustomization_is_one_the_tests_know() -> None:
    """Each directory with a kustomization is rendered below; the named ones are looked at as a
    whole, and every component is taken by some kustomization (so it is rendered too)."""
    assert all(p.name == "kustomization.yaml" for p in kustomization_files())
    assert set(EVERY_RENDERING) <= set(KUSTOMIZATIONS)
    assert COMPONENTS == [COMPONENT]
    used = {
        (directory / entry).resolve()
        for directory in KUSTOMIZATIONS
        for entry in kustomization(directory).get("components", [])
    }
    assert set(COMPONENTS) <= used, "a component no kustomization takes is never rendered"
    for directory in KUSTOMIZATIONS:
        assert kustomization(directory)["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization(COMPONENT)["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
def test_every_kustomization_renders_cleanly(directory: Path) -> None:
    """kubectl renders it without a warning; every object is one of ours, of a known kind, once,
    and in no namespace (apply with -n, or set one in an overlay)."""
    objects = kustomize(directory)
    assert len({identity(o) for o in objects}) == len(objects)
    for manifest in objects:
        assert manifest["kind"] in CORE_KINDS | OPERATOR_KINDS, manifest["kind"]
        metadata = manifest["metadata"]
        assert "namespace" not in metadata
        assert metadata["labels"][NAME_LABEL] == "tencent-ci-exporter"
        assert metadata["labels"][PART_OF_LABEL] == "tencent-ci-exporter"


# --- schema validation --------------------------------------------------------------------


def validate_strictly(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(
            f"{manifest['kind']} {manifest['metadata'].get('name')}: "
            f"at {'.'.join(map(str, error.path)) or 'top level'}: {error.message}",
            pytrace=False,
        )


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
def test_every_rendered_core_object_passes_kubernetes_validate_strict(
    directory: Path, version: str
) -> None:
    validated = 0
    for manifest in kustomize(directory):
        if manifest["kind"] in OPERATOR_KINDS:
            # CRDs: kubernetes-validate has no schema for them (checked field by field below).
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(manifest, version, strict=True)
            continue
        assert manifest["kind"] in CORE_KINDS
        assert manifest["apiVersion"] in CORE_API_VERSIONS
        validate_strictly(manifest, version)
        validated += 1
    assert validated


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_example_secret_passes_kubernetes_validate_strict(version: str) -> None:
    validate_strictly(yaml.safe_load((BASE / "secret.example.yaml").read_text()), version)


def test_kubernetes_validate_is_strict_here() -> None:
    """The same check refuses a field Kubernetes does not know, so a pass means something."""
    deployment = one(kustomize(BASE), "Deployment")
    container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# --- the Prometheus Operator: a component, not the base --------------------------------------


def test_the_base_needs_no_prometheus_operator(base: list[Manifest]) -> None:
    """Applying the base to a cluster without the Operator's CRDs cannot fail on a kind the API
    server does not know: it renders core objects only."""
    assert not [o["kind"] for o in base if o["kind"] in OPERATOR_KINDS]
    assert {o["apiVersion"] for o in base} <= CORE_API_VERSIONS
    assert "components" not in kustomization(BASE)


@pytest.mark.parametrize("directory", WITH_OPERATOR, ids=ids(list(WITH_OPERATOR)))
def test_the_overlays_with_the_component_have_both_operator_objects(directory: Path) -> None:
    objects = kustomize(directory)
    monitor = one(objects, "ServiceMonitor", "tencent-ci-exporter")
    rule = one(objects, "PrometheusRule", "tencent-ci-exporter")
    assert monitor["apiVersion"] == rule["apiVersion"] == "monitoring.coreos.com/v1"
    # The PrometheusRule is the committed, generated file, unchanged by kustomize.
    assert rule == yaml.safe_load(PROMETHEUS_RULE.read_text())


def test_the_operator_overlay_is_the_base_plus_the_component(
    base: list[Manifest], operator: list[Manifest]
) -> None:
    assert kustomization(OPERATOR)["components"] == ["../../components/prometheus-operator"]
    added = [o for o in operator if o not in base]
    assert all(o in operator for o in base)
    assert sorted(o["kind"] for o in added) == sorted(OPERATOR_KINDS)


def test_without_the_component_the_sharded_overlays_need_no_operator(tmp_path: Path) -> None:
    """overlays/sharded says: drop its `components` entry when there is no Operator. Both
    sharded overlays then render core objects only, and nothing else changes."""
    copied = copy_of_the_manifests(tmp_path)
    path = copied / "overlays" / "sharded" / "kustomization.yaml"
    text = path.read_text()
    entry = "components:\n  - ../../components/prometheus-operator\n"
    assert entry in text
    path.write_text(text.replace(entry, ""))
    for name in ("sharded", "sharded-ha"):
        without = kustomize(copied / "overlays" / name)
        assert {o["kind"] for o in without} <= CORE_KINDS
        with_operator = kustomize(KUBE / "overlays" / name)
        assert without == [o for o in with_operator if o["kind"] not in OPERATOR_KINDS]


# --- the ConfigMap: generated from config.yml ---------------------------------------------


def test_the_config_map_is_generated_from_config_yml_with_a_hashed_name() -> None:
    (generator,) = kustomization(BASE)["configMapGenerator"]
    assert generator["name"] == CONFIG_MAP and generator["files"] == ["config.yml"]
    # The hash suffix is what rolls the pods: it must not be turned off.
    assert "disableNameSuffixHash" not in str(kustomization(BASE))
    for name, objects in renderings():
        config_map = one(objects, "ConfigMap")
        assert HASHED_CONFIG_MAP.fullmatch(config_map["metadata"]["name"]), name
        assert config_map["data"] == {"config.yml": (BASE / "config.yml").read_text()}
        for manifest in workloads(objects):
            # kustomize rewrote the pods' reference to the hashed name, in the overlays too.
            assert config_volume(manifest)["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_changed_config_rolls_the_pods(tmp_path: Path) -> None:
    """A new config.yml is a new ConfigMap name, so a new pod template: applying it rolls the
    Deployment's and the StatefulSets' pods, and the old pods keep the old config meanwhile."""
    copied = copy_of_the_manifests(tmp_path)
    config = copied / "base" / "config.yml"
    text = config.read_text()
    assert "poll_interval: 60s\n" in text
    config.write_text(text.replace("poll_interval: 60s\n", "poll_interval: 2m\n"))
    for directory in EVERY_RENDERING:
        before = kustomize(directory)
        after = kustomize(copied / directory.relative_to(KUBE))
        old = one(before, "ConfigMap")["metadata"]["name"]
        new = one(after, "ConfigMap")["metadata"]["name"]
        assert HASHED_CONFIG_MAP.fullmatch(new) and new != old
        assert "poll_interval: 2m\n" in one(after, "ConfigMap")["data"]["config.yml"]
        changed = workloads(after)
        assert len(changed) == len(workloads(before))
        for was, now in zip(workloads(before), changed, strict=True):
            assert config_volume(now)["configMap"]["name"] == new
            # The only change to the pod template is that name.
            config_volume(now)["configMap"]["name"] = old
            assert now == was
        assert others(after) == others(before)


def others(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] not in ("ConfigMap", "Deployment", "StatefulSet")]


# --- the base -----------------------------------------------------------------------------


def test_base_holds_the_objects_the_exporter_needs(base: list[Manifest]) -> None:
    assert sorted(o["kind"] for o in base) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "NetworkPolicy",
        ]
    )


def test_the_secret_is_an_example_with_placeholders_outside_the_base(
    base: list[Manifest],
) -> None:
    secret = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    listed = kustomization(BASE)
    assert "secret.example.yaml" not in listed["resources"]
    assert "secretGenerator" not in listed
    assert all(o["kind"] != "Secret" for o in base)
    assert set(secret["stringData"]) == {"TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"}
    for value in secret["stringData"].values():
        assert value.startswith("REPLACE-WITH-")
        # A real SecretId is AKID followed by 32 letters and digits.
        assert not re.fullmatch(r"AKID[A-Za-z0-9]{32}", value)
    # What the pods read is this Secret's name.
    (source,) = container(one(base, "Deployment"))["envFrom"]
    assert source["secretRef"]["name"] == secret["metadata"]["name"]


def test_the_deployment_runs_locked_down(base: list[Manifest]) -> None:
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid() != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(one(base, "Deployment"))["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def dockerfile_uid() -> int:
    user = re.search(r"^USER (\d+)(?::\d+)?$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    return int(user.group(1))


def test_the_deployment_has_resources_probes_config_and_keys(base: list[Manifest]) -> None:
    deployment = one(base, "Deployment")
    exporter = container(deployment)
    for kind in ("requests", "limits"):
        assert set(exporter["resources"][kind]) == {"cpu", "memory"}
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (port,) = exporter["ports"]
    assert port == {"name": "metrics", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    options = flags(exporter["args"])
    assert options["web.listen-address"] == f":{port['containerPort']}"
    # --config.file names a key of the ConfigMap, mounted read-only where the flag looks.
    (mount,) = exporter["volumeMounts"]
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    config_map = one(base, "ConfigMap", volume["configMap"]["name"])
    directory, _, key = options["config.file"].rpartition("/")
    assert directory == mount["mountPath"] and key in config_map["data"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert one(base, "ServiceAccount", account)["automountServiceAccountToken"] is False


def test_the_args_are_flags_the_exporter_takes() -> None:
    from exporter.cli import build_parser

    for _, objects in renderings():
        for manifest in workloads(objects):
            args = container(manifest)["args"]
            parsed = build_parser().parse_args(args)
            assert parsed.config_file == flags(args)["config.file"]


def test_the_config_map_is_a_config_the_exporter_loads(base: list[Manifest]) -> None:
    text = one(base, "ConfigMap")["data"]["config.yml"]
    keys = yaml.safe_load((BASE / "secret.example.yaml").read_text())["stringData"]
    config = parse_config(text, "config.yml", {**keys, "TENCENTCLOUD_SECRET_KEY": "key"})
    assert len(config.targets) >= 2  # more than one, so the shards have something to split
    for target in config.targets:
        # From the environment the Secret fills, as no target names credentials.
        assert isinstance(target.credentials, Credentials)
        assert target.credentials.secret_id == keys["TENCENTCLOUD_SECRET_ID"]


def test_service_and_service_monitor_scrape_each_pod_once() -> None:
    for name, objects in renderings(WITH_OPERATOR):
        monitor = one(objects, "ServiceMonitor")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["name"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped = [
            s
            for s in objects
            if s["kind"] == "Service" and selects(selector, s["metadata"]["labels"])
        ]
        assert len(scraped) == 1, f"{name}: {len(scraped)} Services scraped"
        service = scraped[0]
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = service["spec"]["ports"]
        assert endpoint["port"] == port["name"]
        assert endpoint["path"] == "/metrics"
        for manifest in workloads(objects):
            pod = manifest["spec"]["template"]
            assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
            assert port["targetPort"] == container(manifest)["ports"][0]["name"]
            assert "web.telemetry-path" not in flags(container(manifest)["args"])
        # The exporter's `service` label (media, ai, ...) must survive the Operator's own.
        assert endpoint["honorLabels"] is True


def test_the_operator_names_the_scrape_job_as_the_rules_and_prometheus_yml_do() -> None:
    """With no jobLabel, the Operator's job label is the scraped Service's name: it must be the
    job that up{job=...} in the rules and deploy/prometheus/prometheus.yml name."""
    exprs = " ".join(str(rule["expr"]) for group in rule_file_groups() for rule in group["rules"])
    selected = set(re.findall(r'job\s*=\s*"([^"]+)"', exprs))
    prometheus_yml = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus_yml["scrape_configs"]}
    for _, objects in renderings(WITH_OPERATOR):
        monitor = one(objects, "ServiceMonitor")
        assert "jobLabel" not in monitor["spec"]
        service = one(objects, "Service", "tencent-ci-exporter")
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert selected <= {service["metadata"]["name"]} and service["metadata"]["name"] in jobs


def test_only_prometheus_pods_reach_the_metrics_port(base: list[Manifest]) -> None:
    policy = one(base, "NetworkPolicy")["spec"]
    pod = one(base, "Deployment")["spec"]["template"]
    assert selects(policy["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    # One peer holding both selectors: Prometheus pods in the monitoring namespace only.
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {NAME_LABEL: "prometheus"}
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_images_agree_with_compose_and_the_version() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    expected = f"tencent-ci-exporter:{pyproject_version()}"
    assert compose["services"]["tencent-ci-exporter"]["image"] == expected
    for _, objects in renderings():
        for manifest in workloads(objects):
            assert container(manifest)["image"] == expected


# --- the sharded overlay ------------------------------------------------------------------


def test_the_overlay_replaces_the_deployment_with_a_stateful_set(
    operator: list[Manifest], sharded: list[Manifest]
) -> None:
    """Everything else is the base's with the Operator's component, as overlays/operator has."""
    assert all(o["kind"] != "Deployment" for o in sharded)
    kept = [o for o in operator if o["kind"] != "Deployment"]
    assert all(o in sharded for o in kept)
    added = [o for o in sharded if o not in kept]
    assert sorted(o["kind"] for o in added) == ["Service", "StatefulSet"]


def test_every_pod_of_the_stateful_set_is_one_shard_and_every_target_has_one(
    sharded: list[Manifest],
) -> None:
    from exporter.sharding import Shard, resolve_shard, shard_of

    stateful_set = one(sharded, "StatefulSet")
    exporter = container(stateful_set)
    options = flags(exporter["args"])
    count = int(options["shard.count"])
    assert stateful_set["spec"]["replicas"] == count > 1
    assert "shard.index" not in options
    (hostname,) = [e for e in exporter["env"] if e["name"] == "HOSTNAME"]
    assert hostname["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    name = stateful_set["metadata"]["name"]
    shards = [resolve_shard(count, None, {"HOSTNAME": f"{name}-{i}"}) for i in range(count)]
    assert shards == [Shard(i, count) for i in range(count)]
    text = one(sharded, "ConfigMap")["data"]["config.yml"]
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDtest", "TENCENTCLOUD_SECRET_KEY": "key"}
    for target in parse_config(text, "config.yml", env).targets:
        assert sum(shard.owns(target.bucket) for shard in shards) == 1
        assert 0 <= shard_of(target.bucket, count) < count


def test_the_shards_run_the_base_pod_plus_the_shard_flags(
    base: list[Manifest], sharded: list[Manifest]
) -> None:
    template = copy.deepcopy(one(sharded, "StatefulSet")["spec"]["template"])
    exporter = template["spec"]["containers"][0]
    exporter["args"] = [a for a in exporter["args"] if not a.startswith("--shard.")]
    exporter["env"] = [e for e in exporter["env"] if e["name"] != "HOSTNAME"]
    if not exporter["env"]:
        del exporter["env"]
    assert template == one(base, "Deployment")["spec"]["template"]


def test_the_headless_service_governs_the_stateful_set(sharded: list[Manifest]) -> None:
    stateful_set = one(sharded, "StatefulSet")
    headless = one(sharded, "Service", stateful_set["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(
        headless["spec"]["selector"], stateful_set["spec"]["template"]["metadata"]["labels"]
    )
    assert stateful_set["spec"]["selector"]["matchLabels"] == headless["spec"]["selector"]


# --- the sharded-ha overlay: every shard twice ---------------------------------------------

REPLICA_LABEL = "tencent-ci-exporter/replica"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # set by Kubernetes on StatefulSet pods


def replica_sets(objects: list[Manifest]) -> list[Manifest]:
    found = [o for o in objects if o["kind"] == "StatefulSet"]
    assert len(found) == 2, f"expected two StatefulSets, found {len(found)}"
    return found


def without_replica_identity(stateful_set: Manifest) -> Manifest:
    """The StatefulSet minus its name and the label that tells the replicas apart."""
    stripped = copy.deepcopy(stateful_set)
    del stripped["metadata"]["name"]
    spec = stripped["spec"]
    for labels in (
        stripped["metadata"]["labels"],
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"],
    ):
        del labels[REPLICA_LABEL]
    return stripped


def test_the_ha_overlay_is_the_sharded_one_with_its_stateful_set_twice(
    sharded: list[Manifest], sharded_ha: list[Manifest]
) -> None:
    shared = [o for o in sharded if o["kind"] != "StatefulSet"]
    assert sorted(map(identity, (o for o in sharded_ha if o["kind"] != "StatefulSet"))) == sorted(
        map(identity, shared)
    )
    assert all(o in sharded_ha for o in shared)
    names = sorted(o["metadata"]["name"] for o in replica_sets(sharded_ha))
    assert names == ["tencent-ci-exporter-a", "tencent-ci-exporter-b"]


def test_the_two_replica_sets_differ_only_in_name_and_replica_label(
    sharded: list[Manifest], sharded_ha: list[Manifest]
) -> None:
    first, second = replica_sets(sharded_ha)
    assert without_replica_identity(first) == without_replica_identity(second)
    values = {s["metadata"]["labels"][REPLICA_LABEL] for s in (first, second)}
    assert len(values) == 2
    # And each is the sharded overlay's StatefulSet plus the spreading of its pods.
    spread = without_replica_identity(first)
    del spread["spec"]["template"]["spec"]["topologySpreadConstraints"]
    original = copy.deepcopy(one(sharded, "StatefulSet"))
    del original["metadata"]["name"]
    assert spread == original


def test_each_replica_set_selects_its_own_pods_only(sharded_ha: list[Manifest]) -> None:
    first, second = replica_sets(sharded_ha)
    for owner, other in ((first, second), (second, first)):
        selector = owner["spec"]["selector"]["matchLabels"]
        assert selects(selector, owner["spec"]["template"]["metadata"]["labels"])
        assert not selects(selector, other["spec"]["template"]["metadata"]["labels"])
        headless = one(sharded_ha, "Service", owner["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert selects(
            headless["spec"]["selector"], owner["spec"]["template"]["metadata"]["labels"]
        )


def pod_shards(stateful_set: Manifest) -> dict[str, Any]:
    """Pod name -> the Shard that pod's exporter resolves from its HOSTNAME."""
    from exporter.sharding import resolve_shard

    exporter = container(stateful_set)
    options = flags(exporter["args"])
    assert "shard.index" not in options
    count = int(options["shard.count"])
    assert stateful_set["spec"]["replicas"] == count > 1
    (hostname,) = [e for e in exporter["env"] if e["name"] == "HOSTNAME"]
    assert hostname["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    pods = [f"{stateful_set['metadata']['name']}-{i}" for i in range(count)]
    return {pod: resolve_shard(count, None, {"HOSTNAME": pod}) for pod in pods}


def test_every_bucket_is_polled_by_one_pod_of_each_replica_set(
    sharded_ha: list[Manifest],
) -> None:
    from exporter.sharding import Shard

    first, second = replica_sets(sharded_ha)
    shards = {name: pod_shards(s) for name, s in ((1, first), (2, second))}
    for replica in shards.values():
        count = len(replica)
        assert sorted(replica.values(), key=lambda s: s.index) == [
            Shard(i, count) for i in range(count)
        ]
    text = one(sharded_ha, "ConfigMap")["data"]["config.yml"]
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDtest", "TENCENTCLOUD_SECRET_KEY": "key"}
    targets = parse_config(text, "config.yml", env).targets
    assert len(targets) >= 2
    for target in targets:
        pollers = [
            (replica, shard.index)
            for replica, pods in shards.items()
            for shard in pods.values()
            if shard.owns(target.bucket)
        ]
        assert len(pollers) == 2, f"{target.bucket}: polled by {pollers}"
        (a, a_index), (b, b_index) = pollers
        assert a != b and a_index == b_index


def test_the_two_pods_of_a_shard_prefer_different_nodes(sharded_ha: list[Manifest]) -> None:
    for stateful_set in replica_sets(sharded_ha):
        (spread,) = stateful_set["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["maxSkew"] == 1
        # A preference: a cluster with one node still runs every shard.
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
        # Counted among the pods of the same shard index, of both replica sets.
        assert spread["matchLabelKeys"] == [POD_INDEX_LABEL]
        for other in replica_sets(sharded_ha):
            labels = other["spec"]["template"]["metadata"]["labels"]
            assert selects(spread["labelSelector"]["matchLabels"], labels)


def test_the_service_monitor_scrapes_both_replicas_through_one_service(
    sharded_ha: list[Manifest],
) -> None:
    selector = one(sharded_ha, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    services = [
        s
        for s in sharded_ha
        if s["kind"] == "Service" and selects(selector, s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["tencent-ci-exporter"]
    policy = one(sharded_ha, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    for stateful_set in replica_sets(sharded_ha):
        labels = stateful_set["spec"]["template"]["metadata"]["labels"]
        assert selects(services[0]["spec"]["selector"], labels)
        assert selects(policy, labels)


# --- the PrometheusRule: generated from deploy/prometheus/rules ---------------------------


def committed_rule() -> Manifest:
    return one(kustomize(OPERATOR), "PrometheusRule")


def rule_file_groups() -> list[dict[str, Any]]:
    files = sorted(p for p in RULES.iterdir() if p.suffix in (".yml", ".yaml"))
    assert files, f"no rule files in {RULES}"
    return [group for path in files for group in yaml.safe_load(path.read_text())["groups"]]


def test_the_committed_prometheus_rule_is_what_the_mixin_makes() -> None:
    """The PrometheusRule is generated with the rule files from mixin/ (tests/test_mixin.py
    checks every generated file byte for byte); here: it says so, and `--check` agrees."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "mixin" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert PROMETHEUS_RULE.read_text().startswith("# Generated by mixin/generate.py")


def test_the_prometheus_rule_holds_exactly_the_groups_of_the_rule_files() -> None:
    assert committed_rule()["spec"]["groups"] == rule_file_groups()


def test_the_prometheus_rule_is_well_formed() -> None:
    rule = committed_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] and rule["metadata"]["labels"][NAME_LABEL]
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    for group in rule["spec"]["groups"]:
        assert group["rules"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item) and item["expr"]


def test_promtool_accepts_the_prometheus_rule_groups(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package prometheus)"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": committed_rule()["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in rule_file_groups())
    assert f"SUCCESS: {count} rules found" in result.stdout
