"""`tidings connect matrix`: log in once, then keep the store in step with the wearer's rooms.

The Matrix client library is imported only by the commands that connect:
matrix-nio takes half a second to import, which every other command would pay.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import threading

from typing import TYPE_CHECKING

from tidings.device.config import Config, ConfigError, MatrixConfig
from tidings.device.matrix.credentials import Credentials
from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer

if TYPE_CHECKING:
    from tidings.device.matrix.connector import ConnectorSettings, ConnectorThread, MatrixConnector

log = logging.getLogger("tidings")
PASSWORD_ENV = "TIDINGS_MATRIX_PASSWORD"
TOKEN_ENV = "TIDINGS_MATRIX_ACCESS_TOKEN"


def settings(config: MatrixConfig) -> ConnectorSettings:
    from tidings.device.matrix.connector import ConnectorSettings

    return ConnectorSettings(sync_timeout_ms=config.sync_timeout_ms, retry_min_seconds=config.retry_min_seconds,
                             retry_max_seconds=config.retry_max_seconds, encryption=config.encryption)


def credentials(config: MatrixConfig, *, relogin: bool = False, homeserver: str = "", user_id: str = "") -> Credentials:
    """The stored login; without one (or with `relogin`), log in and store it."""
    if not relogin and config.credentials.exists():
        return Credentials.load(config.credentials)
    homeserver = homeserver or config.homeserver
    user_id = user_id or config.user_id
    if not homeserver or not user_id:
        raise ConfigError("to log in to Matrix, set [matrix] homeserver and user_id in the config "
                          "(or pass --homeserver and --user)")
    from tidings.device.matrix.client import login

    token = os.environ.get(TOKEN_ENV, "")
    password = "" if token else os.environ.get(PASSWORD_ENV, "")
    if not token and not password:
        if not sys.stdin.isatty():
            raise ConfigError(f"no Matrix password: set ${PASSWORD_ENV} (or ${TOKEN_ENV}) or run in a terminal")
        password = getpass.getpass(f"Matrix password for {user_id}: ")
    login_details = asyncio.run(login(homeserver, user_id, password=password, access_token=token,
                                      device_name=config.device_name))
    login_details.save(config.credentials)
    print(f"tidings: logged in to {homeserver} as {login_details.user_id} (device {login_details.device_id}); "
          f"the access token is in {config.credentials}", file=sys.stderr)
    return login_details


def connector(config: Config, login_details: Credentials, **callbacks) -> MatrixConnector:
    from tidings.device.matrix.connector import MatrixConnector

    wearer = Wearer.from_config(config.wearer)
    if not wearer:
        log.warning("[wearer] name is not set: your own Matrix messages are stored under your display name and "
                    "summaries stay in the third person")
    return MatrixConnector(login_details, config.store.path, wearer=wearer, keys_dir=config.matrix.keys_dir,
                           settings=settings(config.matrix), **callbacks)


def start_beside_voice(config: Config, say, messages_arrived) -> ConnectorThread:
    """The connector on its own thread for `tidings listen`: new messages wake the loop, failures are said."""
    from tidings.device.matrix.connector import ConnectorThread
    from tidings.device.matrix.delivery import Delivery, notice

    with Store(config.store.path) as store:
        titles = {thread: store.thread_title(thread) for thread in store.connector_threads("matrix")}

    def delivered(delivery: Delivery) -> None:
        to = titles.get(delivery.entry.thread)
        if to is None:
            with Store(config.store.path) as store:
                to = titles[delivery.entry.thread] = store.thread_title(delivery.entry.thread)
        text = notice(delivery, to)
        if text:
            say(text)

    thread = ConnectorThread(connector(config, credentials(config.matrix), on_messages=lambda report: messages_arrived(),
                                       on_delivery=delivered))
    thread.start()
    return thread


def cmd_connect_matrix(args: argparse.Namespace, config: Config) -> int:
    login_details = credentials(config.matrix, relogin=args.login, homeserver=args.homeserver or "",
                                user_id=args.user or "")
    if args.login_only:
        return 0
    link = connector(config, login_details)
    if args.once:
        report = asyncio.run(link.run_once())
        with Store(config.store.path) as store:
            pending = store.pending_deliveries("matrix")
        print(json.dumps({"added": report.added, "duplicates": report.duplicates, "removed": report.removed,
                          "history": report.history, "undelivered": len(pending)}))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"tidings: syncing {login_details.user_id} from {login_details.homeserver} into {config.store.path} "
          "and delivering confirmed replies (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        asyncio.run(link.run(stop))
    except KeyboardInterrupt:
        pass
    return 0


def add_connect_parser(sub) -> None:
    p = sub.add_parser("connect", help="bring a messenger's conversations in and deliver confirmed replies",
                       description="Connect the device store to a messenger account.")
    kinds = p.add_subparsers(dest="connector", required=True, metavar="MESSENGER")
    m = kinds.add_parser(
        "matrix", help="a Matrix account (and, through mautrix bridges, WhatsApp, Signal, Telegram, ...)",
        description="Log in to a Matrix homeserver once (the access token is kept in [matrix] credentials, mode "
        f"0600; the password is read from ${PASSWORD_ENV} or asked for, and never stored; ${TOKEN_ENV} logs in "
        "with an existing token instead), then sync: every new message of every joined room is stored (room = "
        "thread, sender = display name), and every reply confirmed with 'send' is delivered to its room exactly "
        "once, retried while the homeserver is away. Messages from before the first sync are kept as history, "
        "never announced. Runs until Ctrl-C; `tidings listen --matrix` runs the same beside the voice loop.")
    m.add_argument("--homeserver", help="homeserver URL, overrides [matrix] homeserver (for --login)")
    m.add_argument("--user", help="user id (@name:server), overrides [matrix] user_id (for --login)")
    m.add_argument("--login", action="store_true", help="log in again even if a login is stored")
    m.add_argument("--login-only", action="store_true", help="log in (if needed) and stop, without syncing")
    m.add_argument("--once", action="store_true",
                   help="sync once, deliver what is due, send read receipts, print a JSON report and stop")
    m.set_defaults(func=cmd_connect_matrix)
