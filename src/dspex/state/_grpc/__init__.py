"""Layer 2: the gRPC adapter, the only code importing ``grpc`` or the generated ``dspex._proto``.

``_channel`` (addresses, channels), ``_convert`` (messages), ``_status`` (errors <-> status codes),
``server`` (the servicer), ``_hub`` (watch-stream wake-ups) and ``_runner`` (running a server).
Nothing here is imported by ``import dspex`` or local sessions.
"""
