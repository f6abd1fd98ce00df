"""Logging in to a homeserver and opening the wearer's client (matrix-nio).

nio's own retry loops are turned off (`max_timeouts=0`): an unreachable
homeserver comes back to Tidings as an error at once, so delivery can back off
on its own schedule and tell the wearer, instead of hanging in a library loop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiohttp
from nio import AsyncClient, AsyncClientConfig, LoginError, WhoamiError
from tidings.device.matrix.credentials import Credentials
from tidings.device.matrix.errors import MatrixError

log = logging.getLogger("tidings")
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def _config(encryption: bool) -> AsyncClientConfig:
    return AsyncClientConfig(max_timeouts=0, max_limit_exceeded=3, request_timeout=40,
                             encryption_enabled=encryption, store_sync_tokens=False)


async def login(homeserver: str, user_id: str, *, password: str = "", access_token: str = "",
                device_name: str = "Tidings") -> Credentials:
    """A new device login with a password, or an existing access token (its device is looked up)."""
    client = AsyncClient(homeserver, user_id, config=_config(False))
    try:
        if access_token:
            client.access_token = access_token
            reply = await client.whoami()
            if isinstance(reply, WhoamiError):
                raise MatrixError(f"{homeserver} refused the access token for {user_id}: {reply.message}")
            if reply.user_id != user_id:
                raise MatrixError(f"the access token belongs to {reply.user_id}, not {user_id}")
            if not reply.device_id:
                raise MatrixError(f"{homeserver} did not say which device the access token belongs to")
            return Credentials(homeserver, reply.user_id, reply.device_id, access_token)
        reply = await client.login(password=password, device_name=device_name)
        if isinstance(reply, LoginError):
            raise MatrixError(f"{homeserver} refused the login for {user_id}: {reply.message}")
        return Credentials(homeserver, reply.user_id, reply.device_id, reply.access_token)
    except CONNECTION_ERRORS as exc:
        raise MatrixError(f"cannot reach the homeserver {homeserver}: {exc}") from None
    finally:
        await client.close()


def open_client(credentials: Credentials, keys_dir: Path | None) -> AsyncClient:
    """The wearer's client on this device; with `keys_dir`, end-to-end encrypted rooms too."""
    if keys_dir is not None:
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
    client = AsyncClient(credentials.homeserver, credentials.user_id, device_id=credentials.device_id,
                         store_path=str(keys_dir) if keys_dir else "", config=_config(keys_dir is not None))
    client.restore_login(credentials.user_id, credentials.device_id, credentials.access_token)
    return client
