"""Client side: reaching a session store from another process.

``client`` is ``SessionStoreProvider`` (the sync gRPC client, a StateProvider); ``cache`` is
the watch-coherent read cache over it; ``shared_watch``, ``watch`` and ``streams`` read the
watch streams; ``tools`` is the tool client and an owner's serving loop; ``connect`` opens a
store from ``None``, an address or a provider. Never imports the server.
"""
