"""The Kubernetes manifests (deploy/kubernetes/) as a cluster would take them: each object
valid against the Kubernetes schemas (kubernetes-validate, strict: no unknown fields),
the KEDA objects against KEDA's documented fields, and what they set is what Switchboard
reads (its settings, its queue's Redis list)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.settings import CONFIG_FILE_KEY, KEYS
from storage.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.30.0"

# KEDA's ScaledObject and TriggerAuthentication, as its documentation gives them (v2.x).
SCALED_OBJECT = {"scaleTargetRef", "pollingInterval", "cooldownPeriod",
                 "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                 "maxReplicaCount", "fallback", "advanced", "triggers"}
TARGET = {"name", "apiVersion", "kind", "envSourceContainerName"}
TRIGGER = {"type", "metadata", "authenticationRef", "name", "useCachedMetrics",
           "metricType"}
REDIS_SENTINEL = {"addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports",
                  "portsFromEnv", "username", "usernameFromEnv", "password",
                  "passwordFromEnv", "sentinelUsername", "sentinelUsernameFromEnv",
                  "sentinelPassword", "sentinelPasswordFromEnv", "sentinelMaster",
                  "sentinelMasterFromEnv", "listName", "listLength", "activationListLength",
                  "enableTLS", "unsafeSsl", "databaseIndex"}
TRIGGER_AUTH = {"secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
                "podIdentity", "configMapTargetRef"}
REDIS_AUTH_PARAMETERS = {"username", "password", "sentinelUsername", "sentinelPassword",
                         "tls", "ca", "cert", "key"}


def objects() -> list[dict[str, Any]]:
    found = []
    for path in MANIFESTS:
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_there_is_each_object_the_topology_needs() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects())
    assert ("Deployment", "switchboard-run") in kinds
    assert ("Deployment", "switchboard-worker") in kinds
    assert ("StatefulSet", "switchboard-keyholder") in kinds
    assert {k for k, _ in kinds} >= {"ConfigMap", "Secret", "Service",
                                     "PodDisruptionBudget", "ScaledObject",
                                     "TriggerAuthentication"}


@pytest.mark.parametrize("manifest", [o for o in objects()
                                      if not o["apiVersion"].startswith("keda.sh/")],
                         ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_each_object_is_valid_kubernetes(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_keda_objects_use_only_documented_fields() -> None:
    keda = {o["kind"]: o for o in objects() if o["apiVersion"] == "keda.sh/v1alpha1"}
    spec = keda["ScaledObject"]["spec"]
    assert set(spec) <= SCALED_OBJECT and set(spec["scaleTargetRef"]) <= TARGET
    # RQ's scheduler, which enqueues due retries, runs inside a worker: never zero.
    assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] >= spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert set(trigger) <= TRIGGER and trigger["type"] == "redis-sentinel"
    assert set(trigger["metadata"]) <= REDIS_SENTINEL
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA's are strings
    # The list RQ keeps the queue in, under the configured prefix.
    assert trigger["metadata"]["listName"] == f"rq:queue:{Keys('sb').queue_name()}"
    auth = keda["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert set(auth["spec"]) <= TRIGGER_AUTH
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} <= REDIS_AUTH_PARAMETERS
    deployments = {o["metadata"]["name"] for o in objects() if o["kind"] == "Deployment"}
    assert spec["scaleTargetRef"]["name"] in deployments


def test_what_the_manifests_set_is_what_switchboard_reads() -> None:
    known = {k.env for k in KEYS} | {k.env_file for k in KEYS if k.secret} | {CONFIG_FILE_KEY}
    secrets = next(o for o in objects() if o["kind"] == "Secret")["stringData"]
    for manifest in objects():
        if manifest["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            for env in container["env"]:
                assert env["name"] in known, env["name"]
                if env["name"].endswith("_FILE"):
                    assert Path(env["value"]).name in secrets, env
    config = next(o for o in objects() if o["kind"] == "ConfigMap")
    toml = tomllib.loads(config["data"]["switchboard.toml"])
    names = {k.name for k in KEYS}
    flat: list[str] = []
    for section, body in toml.items():
        flat += [f"{section}.{key}" for key in body] if isinstance(body, dict) else [section]
    assert set(flat) <= names, set(flat) - names
