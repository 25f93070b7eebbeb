"""Layer 2, gRPC adapter: domain objects <-> ``dspex.bridge.v1`` messages.

The only package that builds or reads ``*_pb2`` messages: ``core`` (values, specs, records,
sessions), ``client`` (what ``SessionStoreProvider`` sends and receives) and ``server`` (what the
servicer receives and sends).
"""
