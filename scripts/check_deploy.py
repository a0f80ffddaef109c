"""The deployment files' cross-checks that no linter makes (scripts/check-deploy runs this
with the deploy tools' Python, after cfn-lint and kubernetes-validate):

  iam   every deploy/iam/*.json parses as an IAM policy document; each policy the
        CloudFormation template creates, rendered with the placeholders the JSON files use
        (REGION, ACCOUNT_ID, the default name prefix), equals its JSON file; the IRSA trust
        policies (JSON text inside !Sub, which cfn-lint does not parse) parse and name the
        right service accounts; each table's key attributes appear in the Rust module that
        creates it; a table with TTL has its attribute named in that module, and one without
        TTL has a module that never writes `ttl`.
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

import pathlib
import sys

import deploy_checks
from deploy_checks import iam, k8s


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("iam", "k8s"):
        sys.exit(__doc__)
    deploy_checks.root = pathlib.Path(sys.argv[2] if len(sys.argv) == 3 else ".").resolve()
    {"iam": iam.check, "k8s": k8s.check}[sys.argv[1]](deploy_checks.root)
    for message in deploy_checks.failures:
        print(f"check_deploy: {message}", file=sys.stderr)
    sys.exit(1 if deploy_checks.failures else 0)


if __name__ == "__main__":
    main()
