"""Layer 2, gRPC adapter: server reflection in both versions, ``v1`` and ``v1alpha``.

grpcio-reflection ships only ``grpc.reflection.v1alpha``; newer tools (grpcurl, Postman, the
grpc-js reflection client) ask ``grpc.reflection.v1`` first. The two versions have the same
messages with the same field numbers (v1 renamed the package), so the v1alpha servicer also
answers the v1 method path, reading and writing the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME: Final = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: Any, service_names: Iterable[str]) -> None:
    """Serve reflection (v1 and v1alpha) on an aio ``server``, listing ``service_names`` and
    both reflection services."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
