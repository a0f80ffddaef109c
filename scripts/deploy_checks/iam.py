"""check_deploy.py iam: the IAM documents, and the CloudFormation template against them and
against the Rust code (see check_deploy.py)."""

import difflib
import json
import re

from deploy_checks import fail

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
    "ItemsTable": ["data-service/src/store.rs", "data-service/src/store", "data-service/src/convert.rs"],
}


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
            if name.endswith(".Arn") and name[: -len(".Arn")] in self.names:
                return self.arn(name[: -len(".Arn")])
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


def check(root):
    documents = iam_documents(root)
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
    check_irsa_trust(template)
    check_tables(root, template)


# Service role -> the service-account parameter its IRSA trust policy must name.
IRSA_ROLES = {"AuthServiceRole": "AuthServiceAccountName", "DataServiceRole": "DataServiceAccountName"}


def check_irsa_trust(template):
    """The IRSA trust policies are JSON text inside !Sub (their condition keys name the OIDC
    provider, which YAML keys cannot): nothing else parses them before a deploy would."""
    renderer = Renderer(template)
    renderer.values["EksOidcProvider"] = "OIDC_PROVIDER"
    for logical, account in IRSA_ROLES.items():
        where = f"{TEMPLATE}: {logical} AssumeRolePolicyDocument"
        branch = template["Resources"][logical]["Properties"]["AssumeRolePolicyDocument"]
        try:
            text = renderer.render(branch["Fn::If"][1])
            document = json.loads(text)
            statement = document["Statement"][0]
            principal = statement["Principal"]["Federated"]
            condition = statement["Condition"]["StringEquals"]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            fail(f"{where}: the IRSA branch is not the expected policy: {error!r}")
            continue
        namespace = renderer.values["KubernetesNamespace"]
        want = {
            "OIDC_PROVIDER:sub": f"system:serviceaccount:{namespace}:{renderer.values[account]}",
            "OIDC_PROVIDER:aud": "sts.amazonaws.com",
        }
        if principal != "arn:aws:iam::ACCOUNT_ID:oidc-provider/OIDC_PROVIDER" or condition != want:
            fail(f"{where}: IRSA branch trusts {principal} with {condition}, want {want}")
        if statement.get("Action") != "sts:AssumeRoleWithWebIdentity":
            fail(f"{where}: IRSA branch allows {statement.get('Action')!r}")


def iam_documents(root):
    """Every deploy/iam/*.json that parses as a policy document, by file name."""
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
    return documents


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
        ttl = props.get("TimeToLiveSpecification", {})
        ttl_name = ttl.get("AttributeName") if ttl.get("Enabled") is True else None
        if ttl_name is None and '"ttl"' in code:
            fail(f"{TEMPLATE}: {logical} has no TTL, but the code writes `ttl` ({places})")
        if ttl_name is not None and f'"{ttl_name}"' not in code:
            fail(f"{TEMPLATE}: {logical} has TTL on `{ttl_name}`, which the code never "
                 f"names ({places})")
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
