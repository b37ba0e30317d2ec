"""config.schema.json and web-config.schema.json: made from the declarations (exporter.config,
exporter.webconfig) and kept in step with them; every example configuration in the repository
validates against the schema, and a key the exporter does not know does not."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from exporter.config import config_schema, parse_config
from exporter.strictyaml import load_yaml
from exporter.webconfig import web_config_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "config.schema.json": (config_schema, "exporter.config"),
    "web-config.schema.json": (web_config_schema, "exporter.webconfig"),
}
ENV = {"TENCENTCLOUD_SECRET_ID": "AKIDdoc", "TENCENTCLOUD_SECRET_KEY": "doc-key"}


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_shipped_schema_is_the_one_the_declarations_make(name: str) -> None:
    make, module = SCHEMAS[name]
    shipped = json.loads((ROOT / name).read_text(encoding="utf-8"))
    assert shipped == make(), f"{name} is stale: run python3 -m {module} > {name}"


def _is_config(document: object) -> bool:
    targets = document.get("targets") if isinstance(document, dict) else None
    return isinstance(targets, list) and all(isinstance(t, dict) and "bucket" in t for t in targets)


def example_configs() -> Iterator[tuple[str, str]]:
    """(where, YAML text) of every configuration the repository shows: the README's YAML
    blocks, and deploy/'s files and the ConfigMaps' entries (compose, Kubernetes)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            if _is_config(load_yaml(block)):
                yield f"{page.relative_to(ROOT)}, YAML block {index}", block
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        text = path.read_text(encoding="utf-8")
        for document in re.split(r"^---$", text, flags=re.M):
            loaded = load_yaml(document)
            if _is_config(loaded):
                yield str(path.relative_to(ROOT)), document
            if isinstance(loaded, dict) and loaded.get("kind") == "ConfigMap":
                for key, entry in (loaded.get("data") or {}).items():
                    if _is_config(load_yaml(entry)):
                        yield f"{path.relative_to(ROOT)}: data.{key}", entry


EXAMPLES = list(example_configs())


def test_the_examples_are_found() -> None:
    found = {where.split(",")[0].split(":")[0] for where, _ in EXAMPLES}
    assert found >= {
        "README.md",
        "docs/configuration.md",
        "deploy/compose/config.yml",
        "deploy/kubernetes/base/config.yml",
    }


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_example_config_validates(where: str, text: str) -> None:
    validator("config.schema.json").validate(load_yaml(text))
    # And the exporter takes it: the schema says no more than the loader.
    parse_config(text, where, {**ENV, "TENCENTCLOUD_SESSION_TOKEN": "t"})


TARGET = {"bucket": "b-1250000000", "region": "ap-guangzhou"}


def test_text_from_the_environment_validates_where_the_loader_takes_it() -> None:
    document = {
        "poll_interval": "${POLL}",
        "failure_code_limit": "${LIMIT:-50}",
        "rate_limit": {"requests_per_second": "${RPS}", "burst": "7"},
        "histograms": {"run_time_buckets": ["${FIRST}", "1m30s", 600]},
        "targets": [
            {**TARGET, "services": {"media": {"histograms": "${MEDIA_HISTOGRAMS}"}}},
            {**TARGET, "region": "ap-beijing", "credentials": {"cvm_role": None}},
        ],
    }
    validator("config.schema.json").validate(document)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"pol_interval": "60s", "targets": [TARGET]}, "an unknown key"),
        ({"targets": [{**TARGET, "regoin": "x"}]}, "an unknown key in a target"),
        ({"targets": [{**TARGET, "services": {"video": {}}}]}, "an unknown service"),
        ({"targets": [{**TARGET, "credentials": {"secretkey": "k"}}]}, "an unknown key there"),
        ({"targets": [{**TARGET, "credentials": {"secret_id": "a"}}]}, "half a form"),
        (
            {
                "targets": [
                    {**TARGET, "credentials": {"secret_id": "a", "secret_key": "b", "file": "f"}}
                ]
            },
            "two forms of credentials",
        ),
        ({"poll_interval": "5x", "targets": [TARGET]}, "a bad duration"),
        ({"poll_interval": 0.5, "targets": [TARGET]}, "a duration below its minimum"),
        ({"failure_code_limit": 10001, "targets": [TARGET]}, "a number above its maximum"),
        ({"poll_interval": "60s"}, "no targets"),
    ],
)
def test_the_schema_refuses(document: dict[str, Any], why: str) -> None:
    assert not validator("config.schema.json").is_valid(document), why


def test_the_web_config_schema_takes_the_documented_example_and_refuses_an_unknown_key() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    (block,) = [
        b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "tls_server_config" in b
    ]
    web = validator("web-config.schema.json")
    web.validate(load_yaml(block))
    assert not web.is_valid({"tls_config": {}})
    assert not web.is_valid({"tls_server_config": {"min_version": "TLS14"}})
