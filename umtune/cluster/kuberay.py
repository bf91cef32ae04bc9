"""`umtune cluster check` for a KubeRay `RayCluster` manifest (cluster/kuberay.yaml).

The launcher file's rules in Kubernetes' terms: the manifest has the shape KubeRay reads (the
fields these rules use; `kubectl apply --dry-run=server` checks the rest against the CRD), Ray
is umtune's pin, every container runs umtune's image, token auth is on in every pod (the
`authOptions` of KubeRay 1.5.1+, or RAY_AUTH_MODE=token with the token from a Secret, as Ray's
KubeRay guide does it), no secret is written into the manifest, the head's service stays inside
the cluster (ClusterIP; reach it with `kubectl port-forward`), workers that can exist share a
volume with the head, GPUs exist when `--gpu` sweeps will need them, and no placeholder is left.
"""

from __future__ import annotations

import re

from umtune.cluster import security
from umtune.cluster.findings import RAY_VERSION, Finding, no_shared_storage, placeholders
from umtune.storage import SHARED_SCHEMES

RAY_IMAGE = re.compile(r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)")
SHARED_VOLUMES = ("persistentVolumeClaim", "nfs", "csi", "cephfs", "glusterfs", "azureFile")


def is_manifest(config: dict) -> bool:
    return str(config.get("apiVersion", "")).startswith("ray.io/")


def findings(config: dict, *, gpu: bool = False, storage: str | None = None) -> list[Finding]:
    shape = _shape(config)
    if shape:
        return shape
    groups = _groups(config)
    found = [*placeholders(config), *_version(config, groups), *_auth(config, groups),
             *_exposure(config, groups), *_storage(groups, storage)]
    if gpu and not any(_gpus(group) and group.get("maxReplicas", group.get("replicas", 0)) > 0
                       for where, group in groups if where != "spec.headGroupSpec"):
        found.append(Finding("error", "spec.workerGroupSpecs", "no worker group has GPUs "
                             "(nvidia.com/gpu limits) and maxReplicas > 0, so `--gpu` trials "
                             "would wait forever"))
    return found


def _shape(config: dict) -> list[Finding]:
    """What these rules need to read, named where it is missing."""
    if config.get("kind") != "RayCluster":
        return [Finding("error", "kind", f"{config.get('kind')!r}: umtune checks a RayCluster "
                        "(a RayJob or RayService embeds one: check that)")]
    spec = config.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("headGroupSpec"), dict):
        return [Finding("error", "spec.headGroupSpec", "missing: a RayCluster needs a head")]
    found = []
    for where, group in [("spec.headGroupSpec", spec["headGroupSpec"])] + [
            (f"spec.workerGroupSpecs.{i}", g) for i, g in enumerate(spec.get("workerGroupSpecs")
                                                                    or [])]:
        containers = (((group or {}).get("template") or {}).get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers or \
                not all(isinstance(c, dict) for c in containers):
            found.append(Finding("error", f"{where}.template.spec.containers",
                                 "expected a list of containers"))
    return found


def _groups(config: dict) -> list[tuple[str, dict]]:
    spec = config["spec"]
    return [("spec.headGroupSpec", spec["headGroupSpec"])] + [
        (f"spec.workerGroupSpecs.{i}", g) for i, g in enumerate(spec.get("workerGroupSpecs") or [])]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {str(e.get("name")): e for e in container.get("env") or [] if isinstance(e, dict)}


def _version(config: dict, groups: list) -> list[Finding]:
    found = []
    if str(config["spec"].get("rayVersion")) != RAY_VERSION:
        found.append(Finding("error", "spec.rayVersion", f"{config['spec'].get('rayVersion')!r}; "
                             f"umtune pins Ray {RAY_VERSION}"))
    for where, group in groups:
        for i, c in enumerate(_containers(group)):
            image = str(c.get("image", ""))
            pinned = RAY_IMAGE.search(image)
            if pinned and pinned.group(1) != RAY_VERSION:
                found.append(Finding("error", f"{where}.template.spec.containers.{i}.image",
                                     f"Ray {pinned.group(1)}; umtune pins {RAY_VERSION}"))
            elif "umtune" not in image and "REPLACE_ME" not in image:
                found.append(Finding("error", f"{where}.template.spec.containers.{i}.image",
                                     f"{image!r} does not hold umtune: build cluster/Dockerfile "
                                     "and use that image"))
    return found


def _auth(config: dict, groups: list) -> list[Finding]:
    found = []
    options = config["spec"].get("authOptions") or {}
    by_operator = str(options.get("mode", "")).lower() == "token"
    for where, group in groups:
        for i, c in enumerate(_containers(group)):
            at = f"{where}.template.spec.containers.{i}.env"
            env = _env(c)
            for name, entry in env.items():
                if "value" in entry:
                    found += security.secrets(f"{at}.{name}", f"{name}={entry['value']}")
            mode = str((env.get("RAY_AUTH_MODE") or {}).get("value", "")).lower()
            if mode and mode != "token":
                found.append(Finding("error", at, f"RAY_AUTH_MODE={mode} switches token auth "
                                     "off; use token"))
            elif not by_operator and mode != "token":
                found.append(Finding("error", at, "no token auth: set RAY_AUTH_MODE=token and "
                                     "RAY_AUTH_TOKEN from a Secret (or spec.authOptions.mode: "
                                     "token with KubeRay 1.5.1+); without it anyone who reaches "
                                     "the pods runs code"))
            elif not by_operator and "valueFrom" not in (env.get("RAY_AUTH_TOKEN") or {}):
                found.append(Finding("error", at, "RAY_AUTH_MODE=token but no RAY_AUTH_TOKEN "
                                     "from a Secret (valueFrom.secretKeyRef): the pods would "
                                     "not share a token"))
    return found


def _exposure(config: dict, groups: list) -> list[Finding]:
    head = config["spec"]["headGroupSpec"]
    found = []
    if str(head.get("serviceType", "ClusterIP")) in ("LoadBalancer", "NodePort"):
        found.append(Finding("error", "spec.headGroupSpec.serviceType", f"{head['serviceType']} "
                             "puts the head's GCS and dashboard (its job API runs code) outside "
                             "the cluster; keep ClusterIP and use `kubectl port-forward`"))
    for where, group in groups:
        for key, value in (group.get("rayStartParams") or {}).items():
            found += security.secrets(f"{where}.rayStartParams.{key}", f"{key}={value}")
    return found


def _gpus(group: dict) -> bool:
    return any(str((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", "0"))
               not in ("0", "") for c in _containers(group))


def _storage(groups: list, storage: str | None) -> list[Finding]:
    workers = [(w, g) for w, g in groups[1:] if g.get("maxReplicas", g.get("replicas", 0)) > 0]
    if not workers or (storage and storage.startswith(SHARED_SCHEMES)):
        return []

    def shared(group: dict) -> set[str]:
        volumes = {v.get("name") for v in group["template"]["spec"].get("volumes") or []
                   if isinstance(v, dict) and any(k in v for k in SHARED_VOLUMES)}
        mounted = {m.get("name") for c in _containers(group) for m in c.get("volumeMounts") or []
                   if isinstance(m, dict)}
        return volumes & mounted

    common = shared(groups[0][1])
    for _, group in workers:
        common &= shared(group)
    if common:
        return []
    return [no_shared_storage("spec.workerGroupSpecs", storage, "worker pods",
                              "a volume the head and every worker pod mount (a ReadWriteMany "
                              "persistentVolumeClaim, NFS)")]
