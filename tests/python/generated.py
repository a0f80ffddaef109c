"""Generates Python gRPC stubs from the repository's proto/ with grpcio-tools, once per run,
into a temporary directory, and imports them: what a Python user of Dynagate would do."""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
_OUT = tempfile.mkdtemp(prefix="dynagate-py-")
atexit.register(shutil.rmtree, _OUT, ignore_errors=True)
sys.path.insert(0, _OUT)


def load(proto):
    """Compiles `proto` (relative to proto/) and returns its (messages, grpc) modules."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={_OUT}",
            f"--grpc_python_out={_OUT}",
            proto,
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed on {proto} with status {status}")
    for package in _packages(proto):
        init = os.path.join(_OUT, package, "__init__.py")
        os.makedirs(os.path.dirname(init), exist_ok=True)
        open(init, "a").close()
    module = proto[: -len(".proto")].replace("/", ".")
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


def _packages(proto):
    parts = proto.split("/")[:-1]
    return [os.path.join(*parts[: i + 1]) for i in range(len(parts))]
