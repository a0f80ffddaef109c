"""A minimal OTLP/gRPC trace receiver: the collector's TraceService, built from the generated
modules of the `opentelemetry-proto` package (the OpenTelemetry project's own definitions), so
the services' exporter is checked against the real protocol, not against our own idea of it.

Usage: otlp_receiver.py OUTPUT       (started by tests/src/otlp.rs)
Listens on 127.0.0.1 (a free port), prints `otlp receiver listening on PORT` once it does, and
appends every span it receives to OUTPUT as one JSON line, written and flushed before the
Export call is answered, so a service that exported and exited has all its spans in OUTPUT:

  {"service": "data-service", "trace_id": "<32 hex>", "span_id": "<16 hex>",
   "parent_span_id": "<16 hex, or empty for a root>", "name": "...", "kind": "SERVER",
   "attributes": {"rpc.system": "grpc", ...}, "peer": "ipv4:127.0.0.1:PORT"}

Runs until killed.
"""

import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


def value_of(any_value):
    """An AnyValue as plain JSON (scalars; arrays and maps as their text)."""
    kind = any_value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(any_value, kind)
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return str(getattr(any_value, kind)) if kind else None


def attributes_of(key_values):
    return {kv.key: value_of(kv.value) for kv in key_values}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, output):
        self.output = output
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "service": resource.get("service.name"),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "attributes": attributes_of(span.attributes),
                        "peer": context.peer(),
                    }))
        with self.lock:
            for line in lines:
                self.output.write(line + "\n")
            self.output.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main(path):
    with open(path, "a", encoding="utf-8") as output:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(output), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"otlp receiver listening on {port}", flush=True)
        server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
