"""deploy/kubernetes: the kustomize base and the sharded overlays, rendered and checked.

There is no kustomize on PyPI, so `render` below builds the subset these kustomizations use
(resources, patches that delete an object, and strategic-merge patches that only merge maps,
by target kind and name, with allowNameChange), refusing anything else; its output for every
kustomization here was compared with `kubectl kustomize` (kustomize v5.5.0). Core kinds go through
kubernetes-validate (strict); the Prometheus Operator kinds are checked field by field.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.config import parse_config
from exporter.credentials import Credentials
from exporter.server import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
SHARDED = KUBE / "overlays" / "sharded"
SHARDED_HA = KUBE / "overlays" / "sharded-ha"
RULES = ROOT / "deploy" / "prometheus" / "rules"
GENERATOR = KUBE / "generate_prometheusrule.py"

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
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
NAME_LABEL = "app.kubernetes.io/name"
Manifest = dict[str, Any]


# --- a renderer for the kustomize subset used here ----------------------------------------


class KustomizeError(Exception):
    pass


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches"}


def render(directory: Path) -> list[Manifest]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: the test renderer does not do {sorted(unknown)}")
    if (kustomization.get("apiVersion"), kustomization.get("kind")) != (
        "kustomize.config.k8s.io/v1beta1",
        "Kustomization",
    ):
        raise KustomizeError(f"{directory}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        objects.extend(_resource(directory, entry))
    _check_unique(objects, directory)
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, directory, patch)
    return objects


def _resource(directory: Path, entry: str) -> list[Manifest]:
    path = (directory / entry).resolve()
    if path.is_dir():
        return render(path)
    # kustomize's load restrictor: files must be at or below the kustomization.
    if not path.is_relative_to(directory.resolve()):
        raise KustomizeError(f"{directory}: {entry} is outside the kustomization")
    if not path.is_file():
        raise KustomizeError(f"{directory}: no resource {entry}")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _identity(manifest: Manifest) -> tuple[str, str, str, str]:
    group = manifest["apiVersion"].rpartition("/")[0]
    metadata = manifest["metadata"]
    return group, manifest["kind"], metadata.get("namespace", ""), metadata["name"]


def _check_unique(objects: list[Manifest], directory: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for manifest in objects:
        identity = _identity(manifest)
        if identity in seen:
            raise KustomizeError(f"{directory}: {identity} is given twice")
        seen.add(identity)


PATCH_KEYS = {"path", "target", "options"}
TARGET_KEYS = {"kind", "name"}
OPTION_KEYS = {"allowNameChange"}


def _apply_patch(objects: list[Manifest], directory: Path, entry: dict[str, Any]) -> None:
    """A strategic-merge patch file: `$patch: delete` of the one object it names, or a merge
    into the objects `target` selects (by kind, and by exact name rather than kustomize's
    regular expression) or else into the one object it names."""
    if "path" not in entry or set(entry) - PATCH_KEYS:
        raise KustomizeError(f"{directory}: the test renderer does patches by path only")
    target = entry.get("target")
    options = entry.get("options", {})
    if target is not None and (not target or set(target) - TARGET_KEYS):
        raise KustomizeError(f"{directory}: the test renderer targets by kind and name only")
    if set(options) - OPTION_KEYS:
        raise KustomizeError(f"{directory}: the test renderer does options {sorted(OPTION_KEYS)}")
    documents = [d for d in yaml.safe_load_all((directory / entry["path"]).read_text()) if d]
    if len(documents) != 1:
        raise KustomizeError(f"{directory}: {entry['path']}: one patch per file")
    (patch,) = documents
    if patch.get("$patch") == "delete" and target is None:
        objects.remove(_matches(objects, directory, lambda m: _identity(m) == _identity(patch))[0])
        return
    if target is None:
        selected = _matches(objects, directory, lambda m: _identity(m) == _identity(patch))
    else:
        selected = _matches(objects, directory, lambda m: _targeted(m, target))
    for manifest in selected:
        _merge_patch(manifest, patch, directory, options.get("allowNameChange") is True)


def _matches(
    objects: list[Manifest], directory: Path, chosen: Callable[[Manifest], bool]
) -> list[Manifest]:
    matches = [m for m in objects if chosen(m)]
    if not matches:
        raise KustomizeError(f"{directory}: the patch matches no object")
    return matches


def _targeted(manifest: Manifest, target: dict[str, str]) -> bool:
    return all(
        (manifest["kind"] if key == "kind" else manifest["metadata"]["name"]) == value
        for key, value in target.items()
    )


def _merge_patch(manifest: Manifest, patch: Manifest, directory: Path, rename: bool) -> None:
    """Like kustomize: the patch's apiVersion and namespace are ignored, its name is taken only
    with allowNameChange."""
    if patch.get("kind") != manifest["kind"]:
        raise KustomizeError(f"{directory}: the test renderer does not change kinds")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    metadata = dict(body.pop("metadata", {}))
    name = metadata.pop("name", None)
    metadata.pop("namespace", None)
    _merge(manifest, {**body, "metadata": metadata}, directory)
    if rename and name is not None:
        manifest["metadata"]["name"] = name


def _merge(into: dict[str, Any], patch: dict[str, Any], directory: Path) -> None:
    """Strategic merge where it equals a plain merge: maps merge, scalars replace, and a list
    may only be added where there is none (merging lists depends on the schema's merge keys)."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{directory}: the test renderer does $patch: delete only")
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, directory)
        elif isinstance(value, list) and current is not None:
            raise KustomizeError(f"{directory}: the test renderer does not merge lists ({key})")
        else:
            into[key] = copy.deepcopy(value)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render(BASE)


@pytest.fixture(scope="module")
def sharded() -> list[Manifest]:
    return render(SHARDED)


@pytest.fixture(scope="module")
def sharded_ha() -> list[Manifest]:
    return render(SHARDED_HA)


def renderings() -> Iterator[tuple[str, list[Manifest]]]:
    yield "base", render(BASE)
    yield "sharded", render(SHARDED)
    yield "sharded-ha", render(SHARDED_HA)


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


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match is not None
    return match.group(1)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- the renderer itself ------------------------------------------------------------------


def _write(path: Path, *documents: Manifest) -> None:
    path.write_text(yaml.safe_dump_all(documents))


def _cm(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def _kustomization(**fields: Any) -> Manifest:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def test_renderer_takes_resources_from_files_and_bases_and_deletes_by_patch(
    tmp_path: Path,
) -> None:
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base" / "a.yaml", _cm("a"), _cm("b"))
    _write(tmp_path / "base" / "kustomization.yaml", _kustomization(resources=["a.yaml"]))
    (tmp_path / "over").mkdir()
    _write(tmp_path / "over" / "c.yaml", _cm("c"))
    _write(tmp_path / "over" / "gone.yaml", {"$patch": "delete", **_cm("a")})
    _write(
        tmp_path / "over" / "kustomization.yaml",
        _kustomization(resources=["../base", "c.yaml"], patches=[{"path": "gone.yaml"}]),
    )
    assert [o["metadata"]["name"] for o in render(tmp_path / "over")] == ["b", "c"]


def test_renderer_merges_patches_into_targets_and_renames_only_when_allowed(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "a.yaml", _cm("a"), _cm("b"), {**_cm("c"), "data": {"k": "v"}})
    _write(tmp_path / "all.yaml", {**_cm("ignored"), "data": {"new": "1"}})
    _write(
        tmp_path / "rename.yaml", {**_cm("a2"), "metadata": {"name": "a2", "labels": {"l": "x"}}}
    )
    _write(tmp_path / "kept.yaml", _cm("b2"))
    _write(tmp_path / "own.yaml", {**_cm("c"), "data": {"k": "w"}})
    patches = [
        {"path": "all.yaml", "target": {"kind": "ConfigMap"}},
        {"path": "rename.yaml", "target": {"name": "a"}, "options": {"allowNameChange": True}},
        {"path": "kept.yaml", "target": {"kind": "ConfigMap", "name": "b"}},
        {"path": "own.yaml"},
    ]
    _write(
        tmp_path / "kustomization.yaml",
        _kustomization(resources=["a.yaml"], patches=patches),
    )
    assert render(tmp_path) == [
        {**_cm("a2"), "metadata": {"name": "a2", "labels": {"l": "x"}}, "data": {"new": "1"}},
        {**_cm("b"), "data": {"new": "1"}},
        {**_cm("c"), "data": {"k": "w", "new": "1"}},
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resources": ["a.yaml"], "namePrefix": "x-"}, "does not do"),
        ({"resources": ["a.yaml", "a.yaml"]}, "given twice"),
        ({"resources": ["missing.yaml"]}, "no resource"),
        ({"resources": ["../outside.yaml"]}, "outside the kustomization"),
        ({"resources": ["a.yaml"], "patches": [{"path": "gone.yaml"}]}, "matches no object"),
        ({"resources": ["a.yaml"], "patches": [{"path": "replace.yaml"}]}, "delete only"),
        ({"resources": ["a.yaml"], "patches": [{"path": "list.yaml"}]}, "does not merge lists"),
        ({"resources": ["a.yaml"], "patches": [{"path": "two.yaml"}]}, "one patch per file"),
        ({"resources": ["a.yaml"], "patches": [{"patch": "{}"}]}, "by path only"),
        (
            {"resources": ["a.yaml"], "patches": [{"path": "list.yaml", "target": {"name": "z"}}]},
            "matches no object",
        ),
        (
            {
                "resources": ["a.yaml"],
                "patches": [{"path": "list.yaml", "target": {"labelSelector": "x=y"}}],
            },
            "kind and name only",
        ),
        (
            {
                "resources": ["a.yaml"],
                "patches": [{"path": "list.yaml", "options": {"allowKindChange": True}}],
            },
            "does options",
        ),
        (
            {"resources": ["a.yaml"], "patches": [{"path": "kind.yaml", "target": {"name": "a"}}]},
            "does not change kinds",
        ),
    ],
)
def test_renderer_refuses_what_it_does_not_do(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    _write(tmp_path / "outside.yaml", _cm("o"))
    (tmp_path / "k").mkdir()
    _write(tmp_path / "k" / "a.yaml", {**_cm("a"), "items": [1]})
    _write(tmp_path / "k" / "gone.yaml", {"$patch": "delete", **_cm("zzz")})
    _write(tmp_path / "k" / "replace.yaml", {"$patch": "replace", **_cm("a")})
    _write(tmp_path / "k" / "list.yaml", {**_cm("a"), "items": [2]})
    _write(tmp_path / "k" / "two.yaml", _cm("a"), _cm("a"))
    _write(tmp_path / "k" / "kind.yaml", {**_cm("a"), "kind": "Secret"})
    _write(tmp_path / "k" / "kustomization.yaml", _kustomization(**fields))
    with pytest.raises(KustomizeError, match=message):
        render(tmp_path / "k")


# --- schema validation --------------------------------------------------------------------


def _kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is not installed (pip install kubernetes-validate)"
    return found


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_core_manifest_passes_kubernetes_validate_strict(
    tmp_path: Path, version: str
) -> None:
    files: list[Path] = []
    for name, objects in renderings():
        kinds = {o["kind"] for o in objects}
        assert kinds <= CORE_KINDS | OPERATOR_KINDS, f"{name}: unchecked kinds {kinds}"
        for index, manifest in enumerate(o for o in objects if o["kind"] in CORE_KINDS):
            files.append(tmp_path / f"{name}-{index}-{manifest['kind']}.yaml")
            files[-1].write_text(yaml.safe_dump(manifest))
    files.append(BASE / "secret.example.yaml")
    result = subprocess.run(
        [_kubernetes_validate(), "--strict", "--kubernetes-version", version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # One "passed" line per file: a kind it has no schema for only warns, which must not pass.
    assert result.stdout.count(" passed for resource ") == len(files), result.stdout


def test_kubernetes_validate_is_strict_here(tmp_path: Path) -> None:
    """The same command refuses a field Kubernetes does not know, so a pass means something."""
    deployment = copy.deepcopy(one(render(BASE), "Deployment"))
    container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True  # a typo
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [_kubernetes_validate(), "--strict", "--kubernetes-version", KUBE_VERSIONS[0], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


# --- the base -----------------------------------------------------------------------------


def test_base_holds_the_objects_the_exporter_needs(base: list[Manifest]) -> None:
    assert sorted(o["kind"] for o in base) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "NetworkPolicy",
        ]
    )


def test_the_secret_is_an_example_with_placeholders_outside_the_base(
    base: list[Manifest],
) -> None:
    secret = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    assert (
        "secret.example.yaml"
        not in (BASE / "kustomization.yaml").read_text().split("resources:", 1)[1]
    )
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
    config = parse_config(text, "configmap.yaml", {**keys, "TENCENTCLOUD_SECRET_KEY": "key"})
    assert len(config.targets) >= 2  # more than one, so the shards have something to split
    for target in config.targets:
        # From the environment the Secret fills, as no target names credentials.
        assert isinstance(target.credentials, Credentials)
        assert target.credentials.secret_id == keys["TENCENTCLOUD_SECRET_ID"]


def test_service_and_service_monitor_scrape_each_pod_once() -> None:
    for name, objects in renderings():
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
    for _, objects in renderings():
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
    base: list[Manifest], sharded: list[Manifest]
) -> None:
    assert all(o["kind"] != "Deployment" for o in sharded)
    kept = [o for o in base if o["kind"] != "Deployment"]
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
    for target in parse_config(text, "configmap.yaml", env).targets:
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
    assert sorted(map(_identity, (o for o in sharded_ha if o["kind"] != "StatefulSet"))) == sorted(
        map(_identity, shared)
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
    targets = parse_config(text, "configmap.yaml", env).targets
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
    return one(render(BASE), "PrometheusRule")


def rule_file_groups() -> list[dict[str, Any]]:
    files = sorted(p for p in RULES.iterdir() if p.suffix in (".yml", ".yaml"))
    assert files, f"no rule files in {RULES}"
    return [group for path in files for group in yaml.safe_load(path.read_text())["groups"]]


def test_the_committed_prometheus_rule_is_what_the_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert load_generator().render(RULES) == (BASE / "prometheusrule.yaml").read_text()


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


def _rules(directory: Path, name: str, text: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)


def test_the_generator_detects_a_stale_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(
        rules, "a.yml", "groups:\n  - name: a\n    rules:\n      - record: x\n        expr: up\n"
    )
    output = tmp_path / "rule.yaml"
    generator = load_generator()
    assert generator.main(["--rules-dir", str(rules), "--output", str(output)]) == 0
    assert generator.main(["--rules-dir", str(rules), "--output", str(output), "--check"]) == 0
    _rules(
        rules, "b.yml", "groups:\n  - name: b\n    rules:\n      - record: y\n        expr: up\n"
    )
    assert generator.main(["--rules-dir", str(rules), "--output", str(output), "--check"]) == 1
    assert generator.main(["--rules-dir", str(rules), "--output", str(output)]) == 0
    groups = yaml.safe_load(output.read_text())["spec"]["groups"]
    assert [g["name"] for g in groups] == ["a", "b"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({}, "no rule files"),
        (
            {"a.yml": "groups: [{name: a, rules: []}]", "b.yml": "groups: [{name: a, rules: []}]"},
            "group 'a' is also in",
        ),
        ({"a.yml": "rules: []"}, "one key, groups"),
        ({"a.yml": "groups: {name: a}"}, "must be a list"),
        ({"a.yml": "groups: [{rules: []}]"}, "without a name"),
        ({"a.yml": "groups: [unclosed"}, "cannot read rules"),
    ],
)
def test_the_generator_refuses_bad_rule_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], problem: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in files.items():
        (rules / name).write_text(text)
    output = tmp_path / "rule.yaml"
    assert load_generator().main(["--rules-dir", str(rules), "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert problem in error and error.count("\n") == 1
    assert not output.exists()
