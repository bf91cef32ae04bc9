"""Check a Ray cluster launcher file (`ray up FILE`) or a KubeRay manifest before anyone pays
for its instances.

Two layers for a launcher file. First Ray's own JSON schema, read from the installed ray package:
the schema `ray up` itself validates against, so a file that passes here is not refused there for
its shape. Then umtune's rules, which the schema cannot know: the head node type exists and
worker counts are consistent, every node installs umtune (and the Ray version umtune pins), GPU
worker types exist when sweeps will ask for GPUs, a multi-node cluster has storage every node
sees, no placeholder is left unfilled, and the security rules of security.py (token auth, the
dashboard, exposure, secrets, the head's IAM profile). A KubeRay `RayCluster` gets the same
rules in Kubernetes' terms (kuberay.py).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema

from umtune import strict_yaml
from umtune.cluster import kuberay, security
from umtune.cluster.findings import (
    PLACEHOLDER,
    RAY_VERSION,
    Finding,
    no_shared_storage,
    placeholders,
)
from umtune.storage import SHARED_SCHEMES

__all__ = ["PLACEHOLDER", "RAY_VERSION", "Finding", "check", "format_findings", "load"]
# A command that mounts a filesystem every node can see (NFS/EFS/Lustre, or a bucket via FUSE).
SHARED_MOUNT = re.compile(r"\bmount\b[^;&|]*-t\s*(nfs4?|efs|lustre|cifs|ceph)\b"
                          r"|\bmount\.efs\b|\bmount-s3\b|\bs3fs\b|\bgcsfuse\b|\bgoofys\b")
INSTALLS_UMTUNE = re.compile(r"\bpip3?\s+install\b[^;&|]*umtune")
RAY_PIN = re.compile(r"\bray(?:\[[^\]]*\])?==([\w.]+)")
RAY_IMAGE = re.compile(r"^rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)")
AWS_GPU_INSTANCE = re.compile(r"^(p\d|g\d)")  # p3/p4d/p5 (V100/A100/H100), g4dn/g5/g6 (T4/A10G/L4)


def load(path: str | Path) -> dict:
    """The file's mapping, or ValueError naming the file and what is wrong with it (a key given
    twice included)."""
    path = Path(path)
    config = strict_yaml.load(path.read_text(), str(path))
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of cluster fields, got "
                         f"{type(config).__name__}")
    return config


def ray_schema() -> dict:
    return json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())


def schema_findings(config: dict) -> list[Finding]:
    validator = jsonschema.Draft7Validator(ray_schema())
    return [Finding("error", ".".join(map(str, e.absolute_path)), f"Ray's schema: {e.message}")
            for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))]


def project_findings(config: dict, *, gpu: bool = False,
                     storage: str | None = None) -> list[Finding]:
    """umtune's rules; `gpu`: sweeps will run with --gpu; `storage`: their --storage."""
    return [*_node_types(config), *_installs(config), *(_gpus(config) if gpu else []),
            *_storage(config, storage), *placeholders(config),
            *security.launcher_findings(config)]


def check(path: str | Path, *, gpu: bool = False, storage: str | None = None) -> list[Finding]:
    """The findings of a `ray up` file or (apiVersion ray.io/...) a KubeRay manifest."""
    config = load(path)
    if kuberay.is_manifest(config):
        return kuberay.findings(config, gpu=gpu, storage=storage)
    schema = schema_findings(config)
    # Rules read fields whose shape the schema guarantees: skip them when the shape is wrong.
    return schema or project_findings(config, gpu=gpu, storage=storage)


def format_findings(path: str | Path, findings: list[Finding]) -> str:
    lines = [f"{path}: {f.level}: {f.where + ': ' if f.where else ''}{f.message}"
             for f in findings]
    errors = sum(f.level == "error" for f in findings)
    lines.append(f"{path}: {errors} error(s), {len(findings) - errors} warning(s)" if findings
                 else f"{path}: ok (Ray {RAY_VERSION} schema and umtune's rules)")
    return "\n".join(lines)


def _node_types(config: dict) -> list[Finding]:
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    found = []
    if types and head not in types:
        found.append(Finding("error", "head_node_type",
                             f"{head!r} is not one of available_node_types ({', '.join(types)})"))
    for name, node in types.items():
        low = node.get("min_workers", 0)
        if "max_workers" in node and low > node["max_workers"]:
            found.append(Finding("error", f"available_node_types.{name}",
                                 f"min_workers {low} > max_workers {node['max_workers']}"))
    return found


def _commands(config: dict, role: str) -> list[str]:
    """The setup commands a node of `role` ("head" or "worker") runs, in order."""
    lists = [config.get("setup_commands", []), config.get(f"{role}_setup_commands", [])]
    if role == "worker":
        lists += [t.get("worker_setup_commands", [])
                  for t in config.get("available_node_types", {}).values()]
    return [str(c) for commands in lists for c in commands]


def _installs(config: dict) -> list[Finding]:
    docker = config.get("docker") or {}
    images = [docker.get(k, "") for k in ("image", "head_image", "worker_image")]
    found = []
    for role in ("head", "worker"):
        if not any(INSTALLS_UMTUNE.search(c) for c in _commands(config, role)) and \
                not any("umtune" in image for image in images):
            found.append(Finding("error", f"{role}_setup_commands" if role == "head" else
                                 "setup_commands",
                                 f"nothing installs umtune on the {role} nodes: add "
                                 "`pip install -e ~/umtune` to setup_commands, with file_mounts "
                                 "{'~/umtune': '.'} (or use an image that has it)"))
    commands = _commands(config, "head") + _commands(config, "worker")
    versions = {m for c in commands for m in RAY_PIN.findall(c)}
    versions |= {m.group(1) for i in images if (m := RAY_IMAGE.match(i))}
    for version in sorted(versions - {RAY_VERSION}):
        found.append(Finding("error", "setup_commands" if any(version in c for c in commands)
                             else "docker", f"Ray {version} on the nodes; umtune pins "
                             f"ray=={RAY_VERSION} (the driver and the cluster must match)"))
    return found


def _has_gpus(node: dict) -> bool:
    node_config = node.get("node_config", {})
    return (node.get("resources", {}).get("GPU", 0) > 0
            or bool(AWS_GPU_INSTANCE.match(str(node_config.get("InstanceType", ""))))
            or bool(node_config.get("guestAccelerators")))  # GCP


def _gpus(config: dict) -> list[Finding]:
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    if any(_has_gpus(n) and (name == head or n.get("max_workers", 0) > 0)
           for name, n in types.items()):
        return []
    if config["provider"]["type"] == "local":  # your own hosts: Ray detects GPUs at start
        return [Finding("warning", "available_node_types",
                        "no resources: {GPU: N} declared: `ray status` must show GPUs on the "
                        "hosts once they are up, or `--gpu` trials wait forever")]
    return [Finding("error", "available_node_types",
                    "no node type has GPUs, so `--gpu` trials would wait forever: add a worker "
                    "type with a GPU instance (e.g. InstanceType: g6e.12xlarge) or "
                    "resources: {GPU: N}, and max_workers > 0")]


def _max_nodes(config: dict) -> int:
    """How many nodes beside the head the cluster can have."""
    provider = config["provider"]
    if provider["type"] == "local":
        return len(provider.get("worker_ips", []))
    types = config.get("available_node_types", {})
    by_type = sum(t.get("max_workers", 0) for n, t in types.items()
                  if n != config.get("head_node_type"))
    return min(config.get("max_workers", by_type), by_type) if types else \
        config.get("max_workers", 0)


def _storage(config: dict, storage: str | None) -> list[Finding]:
    if _max_nodes(config) == 0 or (storage and storage.startswith(SHARED_SCHEMES)):
        return []
    commands = [*map(str, config.get("initialization_commands", [])),
                *_commands(config, "head"), *_commands(config, "worker")]
    if any(SHARED_MOUNT.search(c) for c in commands):
        return []
    return [no_shared_storage("", storage, f"up to {_max_nodes(config)} worker node(s)",
                              "a filesystem every node mounts (an EFS/NFS mount in "
                              "initialization_commands)")]
