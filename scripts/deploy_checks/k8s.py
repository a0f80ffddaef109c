"""check_deploy.py k8s: the Kubernetes manifests against their kustomization, the Secrets
example, the services' settings, and with each optional component applied (see
check_deploy.py)."""

import copy
import os
import pathlib
import re

import kubernetes_validate
import yaml

import deploy_checks
from deploy_checks import fail


def yaml_documents(path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def declared_env(root, crate):
    names = set()
    for directory in (crate, "common"):
        for path in (root / directory / "src").rglob("*.rs"):
            text = path.read_text()
            names.update(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', text))
            names.update(re.findall(r'from_env\("([A-Z0-9_]+)"\)', text))
    return names


def check_kustomization(root, directory):
    kustomization = yaml_documents(directory / "kustomization.yaml")[0]
    listed = set()
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        target = directory / entry
        if not target.exists():
            fail(f"{(directory / 'kustomization.yaml').relative_to(root)}: lists {entry}, which does not exist")
        elif target.is_dir():
            check_kustomization(root, target)
        listed.add(target.resolve())
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        if path.resolve() not in listed:
            fail(f"{path.relative_to(root)}: not listed in its kustomization.yaml")
    return listed


def check(root):
    directory = root / "deploy/k8s"
    listed = check_kustomization(root, directory)
    base = []
    for path in sorted(listed):
        if path.is_file():
            base.extend(yaml_documents(path))
    secrets = {}
    example = directory / "secrets.example.yaml"
    if example.exists():
        for obj in yaml_documents(example):
            secrets[obj["metadata"]["name"]] = set(obj.get("stringData", {})) | set(obj.get("data", {}))
    check_objects("deploy/k8s", base, secrets)
    # Each optional component (a subdirectory with a kustomization of kind Component), applied
    # to the manifests as kustomize would, then validated like them.
    versions = os.environ.get("K8S_VERSIONS", "").split()
    for path in sorted(directory.glob("*/kustomization.yaml")):
        component = yaml_documents(path)[0]
        if component.get("kind") != "Component":
            continue
        label = f"deploy/k8s with {path.parent.relative_to(directory)}"
        rendered = apply_component(label, copy.deepcopy(base), component)
        for obj in rendered:
            for version in versions:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except Exception as error:  # the library raises several unrelated types
                    where = ".".join(map(str, getattr(error, "path", [])))
                    message = getattr(error, "message", str(error))
                    fail(f"{label}: {obj['kind']} {obj['metadata']['name']} (Kubernetes "
                         f"{version}): {where}: {message}")
        check_objects(label, rendered, secrets)


def apply_component(label, objects, component):
    """The component's JSON 6902 patches applied to `objects` (only what Dynagate's use)."""
    for patch in component.get("patches", []):
        target = patch.get("target", {})
        matches = [o for o in objects
                   if o["kind"] == target.get("kind") and o["metadata"]["name"] == target.get("name")]
        if len(matches) != 1:
            fail(f"{label}: patch target {target} matches {len(matches)} objects, not 1")
            continue
        for op in yaml.safe_load(patch["patch"]):
            try:
                apply_op(matches[0], op)
            except (KeyError, IndexError, ValueError) as error:
                fail(f"{label}: {op['op']} {op['path']} on {target['kind']} {target['name']}: {error!r}")
    return objects


def apply_op(obj, op):
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif kind == "replace":
            node[int(last)] = op["value"]
        elif kind == "remove":
            del node[int(last)]
        else:
            raise ValueError(f"unsupported op {kind}")
    elif kind == "add":
        node[last] = op["value"]
    elif kind in ("replace", "remove"):
        if last not in node:
            raise KeyError(last)
        if kind == "replace":
            node[last] = op["value"]
        else:
            del node[last]
    else:
        raise ValueError(f"unsupported op {kind}")


def check_objects(label, objects, secrets):
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    crates = {"auth-service": "auth-service", "data-service": "data-service"}
    deployments = by_kind.get("Deployment", {})
    if set(deployments) != {"dynagate-auth", "dynagate-data"}:
        fail(f"{label}: Deployments {sorted(deployments)}, expected dynagate-auth and dynagate-data")
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            where = f"{label}: Deployment {name} container {container['name']}"
            binary = (container.get("command") or [""])[0]
            if binary not in crates:
                fail(f"{where}: command {binary!r} is neither auth-service nor data-service")
                continue
            allowed = declared_env(deploy_checks.root, crates[binary])
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                config = by_kind.get("ConfigMap", {}).get(ref)
                if config is None:
                    fail(f"{where}: envFrom ConfigMap {ref!r} is not in the kustomization")
                    continue
                env.update(config.get("data", {}))
            for variable in sorted(env):
                standard = variable.startswith("AWS_") or variable == "RUST_LOG"
                if not standard and variable not in allowed:
                    fail(f"{where}: {variable} is not a variable {binary} reads (its env = \"…\")")
            check_mounts(where, container, volumes, env, secrets)
            check_probe(where, container, env, binary)


def check_mounts(where, container, volumes, env, secrets):
    mounts = container.get("volumeMounts", [])
    for variable, value in sorted(env.items()):
        if not (isinstance(value, str) and value.startswith("/etc/dynagate/")):
            continue
        path = pathlib.PurePosixPath(value)
        mount = next((m for m in mounts if path.parent == pathlib.PurePosixPath(m["mountPath"])), None)
        if mount is None:
            fail(f"{where}: {variable}={value} is on no volume mount")
            continue
        if not mount.get("readOnly"):
            fail(f"{where}: the mount of {value} is not readOnly")
        secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName")
        if secret is None:
            fail(f"{where}: {value} is not on a Secret volume")
        elif path.name not in secrets.get(secret, set()):
            fail(f"{where}: {value}: secrets.example.yaml has no key {path.name!r} in Secret {secret!r}")


def check_probe(where, container, env, binary):
    listen = next((v for k, v in env.items() if k.endswith("_LISTEN_ADDR")), None)
    probe = container.get("readinessProbe", {})
    if listen is None:
        fail(f"{where}: no *_LISTEN_ADDR")
    elif "grpc" in probe:
        # The kubelet's gRPC probe speaks plaintext only.
        if "DYNAGATE_TLS_CERT" in env:
            fail(f"{where}: a gRPC readiness probe cannot reach a TLS port; use `{binary} health-check`")
        if str(probe["grpc"]["port"]) != listen.rsplit(":", 1)[1]:
            fail(f"{where}: readiness probe port {probe['grpc']['port']} is not the listen address {listen}")
    elif probe.get("exec", {}).get("command") != [binary, "health-check"]:
        fail(f"{where}: readiness probe is neither gRPC nor `{binary} health-check`")
