"""The whole Dynagate story from Python, on both services, with stubs generated from proto/.

Register, log in, put, get, query a page at a time, update with versions (a stale version
fails with the current one in an ErrorInfo), delete, refresh, log out; rich error details are
decoded with the standard google.rpc types (grpcio-status + googleapis-common-protos), as any
Python client of ours would.

Usage: story_client.py AUTH_HOST:PORT DATA_HOST:PORT      (run by tests/tests/clients.rs)
Prints one JSON line with what it saw; exits non-zero on any failed check.
"""

import json
import sys
import uuid

import grpc
from google.rpc import error_details_pb2

from errors import detail, expect_error
from generated import load

auth_pb2, auth_grpc = load("dynagate/auth/v1/auth.proto")
data_pb2, data_grpc = load("dynagate/data/v1/data.proto")


def text(value):
    return data_pb2.Value(string_value=value)


def main(auth_address, data_address):
    with grpc.insecure_channel(auth_address) as auth_channel, grpc.insecure_channel(
        data_address
    ) as data_channel:
        auth = auth_grpc.AuthServiceStub(auth_channel)
        data = data_grpc.DataServiceStub(data_channel)

        # A bad registration names every broken field in a BadRequest.
        invalid = expect_error(
            lambda: auth.Register(auth_pb2.RegisterRequest(username="x", password="short")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        bad_request = detail(invalid, error_details_pb2.BadRequest)
        assert bad_request is not None, "no BadRequest in the status details"
        violations = [v.field for v in bad_request.field_violations]

        # Register and log in.
        username = f"py-{uuid.uuid4().hex[:12]}"
        password = f"python-{uuid.uuid4()}"
        user_id = auth.Register(
            auth_pb2.RegisterRequest(username=username, password=password)
        ).user_id
        login = auth.Login(auth_pb2.LoginRequest(username=username, password=password))
        assert login.user_id == user_id
        # Every data call carries the access token as bearer metadata.
        bearer = [("authorization", f"Bearer {login.access_token}")]

        # Put and get.
        put = data.PutItem(
            data_pb2.PutItemRequest(
                key="notes/1",
                attributes={"title": text("hello"), "stars": data_pb2.Value(number_value="5")},
                if_absent=True,
            ),
            metadata=bearer,
        )
        assert put.item.version == 1, put
        got = data.GetItem(data_pb2.GetItemRequest(key="notes/1"), metadata=bearer).item
        assert got.attributes["title"].string_value == "hello", got
        assert got.attributes["stars"].number_value == "5", got

        # Query a page at a time: five items, two per page.
        for n in range(2, 6):
            data.PutItem(
                data_pb2.PutItemRequest(key=f"notes/{n}", attributes={"title": text(f"#{n}")}),
                metadata=bearer,
            )
        pages, page_token = [], ""
        while True:
            page = data.QueryItems(
                data_pb2.QueryItemsRequest(key_prefix="notes/", limit=2, page_token=page_token),
                metadata=bearer,
            )
            pages.append([item.key for item in page.items])
            page_token = page.next_page_token
            if not page_token:
                break

        # Update with versions: a stale expected_version fails and says the current one.
        updated = data.UpdateItem(
            data_pb2.UpdateItemRequest(
                key="notes/1", set={"title": text("hello again")}, remove=["stars"],
                expected_version=1,
            ),
            metadata=bearer,
        ).item
        assert updated.version == 2 and "stars" not in updated.attributes, updated
        stale = expect_error(
            lambda: data.UpdateItem(
                data_pb2.UpdateItemRequest(
                    key="notes/1", set={"title": text("lost")}, expected_version=1
                ),
                metadata=bearer,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        conflict = detail(stale, error_details_pb2.ErrorInfo)
        assert conflict is not None, "no ErrorInfo in the status details"

        # Delete at the version we know; the item is gone afterwards.
        deleted = data.DeleteItem(
            data_pb2.DeleteItemRequest(key="notes/1", expected_version=2), metadata=bearer
        ).item
        missing = expect_error(
            lambda: data.GetItem(data_pb2.GetItemRequest(key="notes/1"), metadata=bearer),
            grpc.StatusCode.NOT_FOUND,
        )

        # Refresh: new tokens that work; then log out, which ends the session.
        refreshed = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
        assert refreshed.refresh_token != login.refresh_token
        data.GetItem(
            data_pb2.GetItemRequest(key="notes/2"),
            metadata=[("authorization", f"Bearer {refreshed.access_token}")],
        )
        auth.Logout(auth_pb2.LogoutRequest(refresh_token=refreshed.refresh_token))
        logged_out = expect_error(
            lambda: auth.Refresh(auth_pb2.RefreshRequest(refresh_token=refreshed.refresh_token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )

    print(
        json.dumps(
            {
                "user_id": user_id,
                "violations": violations,
                "put_version": put.item.version,
                "pages": pages,
                "updated_version": updated.version,
                "stale": {
                    "code": stale.code().name,
                    "reason": conflict.reason,
                    "domain": conflict.domain,
                    "metadata": dict(conflict.metadata),
                },
                "deleted": {"key": deleted.key, "version": deleted.version},
                "after_delete": missing.code().name,
                "after_logout": logged_out.code().name,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
