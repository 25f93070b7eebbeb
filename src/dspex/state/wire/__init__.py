"""What the store server and its clients share: addresses and metadata keys, TLS material,
the one table between dspex errors and gRPC status codes, and value and tool message conversion.

Imports ``grpc`` and the generated ``dspex._proto``; never the server or the client (an
import-linter contract keeps it so). Nothing here is loaded by ``import dspex``.
"""
