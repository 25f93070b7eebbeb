"""Store fixtures (``local``, ``server``, ``client``, ``session_id``) for this folder's tests."""

from support.store_fixtures import (  # noqa: F401 - imported to register the fixtures
    local_provider,
    store_client,
    store_server,
    store_session,
)
