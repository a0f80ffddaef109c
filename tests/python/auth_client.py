"""A Python client generated from our .proto files, driving a running auth-service.

Proves the protos work for other languages: stubs are generated with grpcio-tools at run
time from proto/, then used like any client would. Also checks the standard health service
and reflection v1alpha (what grpcio-reflection speaks; v1 is checked from Rust). The whole
story on both services, with rich error details, is story_client.py.

Usage: auth_client.py HOST:PORT      (run by tests/tests/clients.rs)
Prints one JSON line with what it saw; exits non-zero on any failed check.
"""

import json
import sys
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from errors import expect_error
from generated import load


def main(address):
    auth_pb2, auth_grpc = load("dynagate/auth/v1/auth.proto")
    seen = {}
    with grpc.insecure_channel(address) as channel:
        auth = auth_grpc.AuthServiceStub(channel)

        username = f"py-{uuid.uuid4().hex[:12]}"
        password = f"python-{uuid.uuid4()}"
        registered = auth.Register(auth_pb2.RegisterRequest(username=username, password=password))
        assert registered.user_id, "Register returned no user_id"

        login = auth.Login(auth_pb2.LoginRequest(username=username.upper(), password=password))
        assert login.user_id == registered.user_id
        assert login.access_token.startswith("v4.public.")
        assert login.access_token_expires_at.seconds > 0
        assert login.refresh_token_expires_at.seconds > login.access_token_expires_at.seconds

        refreshed = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
        assert refreshed.refresh_token != login.refresh_token

        revoked = auth.LogoutAll(
            auth_pb2.LogoutAllRequest(),
            metadata=[("authorization", f"Bearer {refreshed.access_token}")],
        )
        assert revoked.sessions_revoked == 1, revoked

        keys = auth.ListSigningKeys(auth_pb2.ListSigningKeysRequest()).keys
        assert [k.active for k in keys].count(True) == 1
        assert all(k.kid.startswith("k4.pid.") for k in keys)

        duplicate = expect_error(
            lambda: auth.Register(auth_pb2.RegisterRequest(username=username, password=password)),
            grpc.StatusCode.ALREADY_EXISTS,
        )

        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="dynagate.auth.v1.AuthService")
        )

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = sorted(s.name for answer in answers for s in answer.list_services_response.service)
        assert "dynagate.auth.v1.AuthService" in services, services

        seen = {
            "user_id": registered.user_id,
            "duplicate": duplicate.code().name,
            "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
            "reflection_v1alpha_services": services,
        }
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
