"""Checks on failed calls shared by the Python client scripts: the expected status code, and
the rich details (google.rpc.Status in the grpc-status-details-bin trailer) decoded with the
standard google.rpc types from grpcio-status and googleapis-common-protos."""

import grpc
from grpc_status import rpc_status


def expect_error(call, code):
    """Runs `call`, which must fail with `code`; returns the grpc.RpcError."""
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


def detail(error, detail_type):
    """The first detail of type `detail_type` (e.g. error_details_pb2.BadRequest) in the
    google.rpc.Status that `error` carries, or None."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for any_detail in status.details:
        if any_detail.Is(detail_type.DESCRIPTOR):
            unpacked = detail_type()
            any_detail.Unpack(unpacked)
            return unpacked
    return None
