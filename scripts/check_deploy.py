"""The deployment files' cross-checks that no linter makes (scripts/check-deploy runs this
with the deploy tools' Python, after cfn-lint and kubernetes-validate):

  iam   every deploy/iam/*.json parses as an IAM policy document; each policy the
        CloudFormation template creates, rendered with the placeholders the JSON files use
        (REGION, ACCOUNT_ID, the default name prefix), equals its JSON file; each table's key
        attributes appear in the Rust module that creates it, and a table has TTL on `ttl`
        exactly when that module writes `ttl`.
  k8s   every resource a kustomization lists exists, and every YAML file in deploy/k8s is
        listed or is a `*.example.yaml`; every variable a ConfigMap gives a service is one that
        service reads (its `env = "…"` declarations); every file under /etc/dynagate a
        ConfigMap names lies on a read-only mount of a Secret that secrets.example.yaml
        describes with that key; the readiness probe is the gRPC one on the listen port, or
        the binary's `health-check` (required with TLS: the kubelet's gRPC probe is plaintext).
        Each optional component (deploy/k8s/*/ of kind Component) is applied to the manifests
        and the result checked the same way and validated against the Kubernetes versions in
        $K8S_VERSIONS (space-separated).

Usage: check_deploy.py iam|k8s [ROOT]. Prints one line per failure, exits 1 if any.
"""

import copy
import difflib
import json
import os
import pathlib
import re
import sys

import kubernetes_validate
import yaml

PLACEHOLDERS = {"AWS::Partition": "aws", "AWS::Region": "REGION", "AWS::AccountId": "ACCOUNT_ID"}
TEMPLATE = "deploy/aws/dynagate.yaml"

# Policy in the template (resource, path inside it) -> the JSON document it must equal.
POLICIES = {
    ("AuthServicePolicy", ("Properties", "PolicyDocument")): "auth-service-policy.json",
    ("DataAccessRole", ("Properties", "AssumeRolePolicyDocument")): (
        "data-access-role-trust-policy.json"
    ),
    ("DataAccessRole", ("Properties", "Policies", 0, "PolicyDocument")): (
        "data-access-role-policy.json"
    ),
    ("DataServiceRole", ("Properties", "Policies", 0, "PolicyDocument")): (
        "data-service-policy.json"
    ),
}

# Table resource -> the Rust files that create and write it.
TABLE_SOURCES = {
    "UsersTable": ["auth-service/src/users.rs", "auth-service/src/users"],
    "SessionsTable": ["auth-service/src/sessions.rs", "auth-service/src/sessions"],
    "LoginAttemptsTable": ["auth-service/src/lockout/table.rs"],
    "RevocationsTable": ["auth-service/src/revocations/table.rs"],
    "ItemsTable": ["data-service/src/store"],
}

failures = []
ROOT = pathlib.Path(".")


def fail(message):
    failures.append(message)


def load_template(root):
    # cfn-lint's own loader understands the short intrinsic tags (!Sub, !GetAtt, ...).
    from cfnlint.decode import decode

    template, matches = decode(str(root / TEMPLATE))
    if matches:
        fail(f"{TEMPLATE}: does not load: {matches}")
        return None
    return template


class Renderer:
    """Evaluates the intrinsic functions the template's policies use, with placeholders."""

    def __init__(self, template):
        self.template = template
        params = template.get("Parameters", {})
        self.values = dict(PLACEHOLDERS)
        for name, spec in params.items():
            self.values[name] = spec.get("Default", "")
        self.names = {}
        for logical, resource in template["Resources"].items():
            props = resource.get("Properties", {})
            name = props.get("TableName") or props.get("RoleName")
            if name is not None:
                self.names[logical] = self.render(name)

    def arn(self, logical):
        kind = self.template["Resources"][logical]["Type"]
        name = self.names[logical]
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:REGION:ACCOUNT_ID:table/{name}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::ACCOUNT_ID:role/{name}"
        raise ValueError(f"no ARN rule for {kind}")

    def sub(self, text):
        def one(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in self.values:
                return str(self.values[name])
            if name in self.names:
                return self.names[name]
            raise ValueError(f"cannot render ${{{name}}}")

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def render(self, node):
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                ref = node["Ref"]
                return self.names.get(ref, self.values.get(ref))
            if set(node) == {"Fn::GetAtt"}:
                logical, attribute = node["Fn::GetAtt"]
                if attribute != "Arn":
                    raise ValueError(f"cannot render GetAtt {attribute}")
                return self.arn(logical)
            if set(node) == {"Fn::Sub"}:
                return self.sub(node["Fn::Sub"])
            return {str(k): self.render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.render(v) for v in node]
        if isinstance(node, str):
            return str(node)
        return node


def dig(node, path):
    for step in path:
        node = node[step]
    return node


def check_iam(root):
    documents = {}
    for path in sorted((root / "deploy/iam").glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            fail(f"{path.relative_to(root)}: not JSON: {error}")
            continue
        statements = document.get("Statement") if isinstance(document, dict) else None
        if document.get("Version") != "2012-10-17" or not isinstance(statements, list):
            fail(f"{path.relative_to(root)}: not an IAM policy (Version 2012-10-17, Statement [])")
            continue
        documents[path.name] = document

    template = load_template(root)
    if template is None:
        return
    renderer = Renderer(template)
    for (logical, path), name in POLICIES.items():
        try:
            rendered = renderer.render(dig(template["Resources"][logical], path))
        except (KeyError, IndexError, ValueError) as error:
            fail(f"{TEMPLATE}: {logical} {'/'.join(map(str, path))}: {error}")
            continue
        if name not in documents:
            fail(f"deploy/iam/{name}: missing (the template's {logical} must equal it)")
        elif rendered != documents[name]:
            diff = difflib.unified_diff(
                json.dumps(documents[name], indent=2).splitlines(),
                json.dumps(rendered, indent=2).splitlines(),
                f"deploy/iam/{name}",
                f"{TEMPLATE} {logical}",
                lineterm="",
            )
            fail(f"{TEMPLATE}: {logical} differs from deploy/iam/{name}:\n" + "\n".join(diff))
    check_tables(root, template)


def rust_text(root, places):
    texts = []
    for place in places:
        path = root / place
        files = sorted(path.rglob("*.rs")) if path.is_dir() else [path]
        texts.extend(f.read_text() for f in files)
    return "\n".join(texts)


def check_tables(root, template):
    resources = template["Resources"]
    tables = {k for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table"}
    if tables != set(TABLE_SOURCES):
        fail(f"{TEMPLATE}: tables {sorted(tables)}, expected {sorted(TABLE_SOURCES)}")
    for logical, places in TABLE_SOURCES.items():
        if logical not in resources:
            continue
        props = resources[logical]["Properties"]
        code = rust_text(root, places)
        for key in props["KeySchema"]:
            if f'"{key["AttributeName"]}"' not in code:
                fail(f"{TEMPLATE}: {logical} key {key['AttributeName']!r} not in {places}")
        writes_ttl = '"ttl"' in code
        ttl = props.get("TimeToLiveSpecification", {})
        has_ttl = ttl.get("Enabled") is True and ttl.get("AttributeName") == "ttl"
        if writes_ttl != has_ttl:
            fail(f"{TEMPLATE}: {logical} TTL on `ttl` is {has_ttl}, but the code "
                 f"{'writes' if writes_ttl else 'does not write'} `ttl` ({places})")
        for setting, want in [
            (("BillingMode",), "PAY_PER_REQUEST"),
            (("PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled"), True),
            (("SSESpecification", "SSEEnabled"), True),
        ]:
            try:
                got = dig(props, setting)
            except KeyError:
                got = None
            if got != want:
                fail(f"{TEMPLATE}: {logical} {'.'.join(setting)} is {got!r}, want {want!r}")


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


def check_k8s(root):
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
            allowed = declared_env(ROOT, crates[binary])
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


def main():
    global ROOT
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("iam", "k8s"):
        sys.exit(__doc__)
    ROOT = pathlib.Path(sys.argv[2] if len(sys.argv) == 3 else ".").resolve()
    {"iam": check_iam, "k8s": check_k8s}[sys.argv[1]](ROOT)
    for message in failures:
        print(f"check_deploy: {message}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
