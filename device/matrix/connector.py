"""The Matrix connector: sync into the store, deliver the outbox, acknowledge what was heard.

Three loops share one client and the store, each doing one job:

    sync      homeserver ─▶ store (messages + token, one transaction) ─▶ on_messages()
    deliver   store outbox ─▶ room (once per row) ─▶ store: delivered / retry later ─▶ on_delivery()
    receipts  store: newest message the wearer heard ─▶ room read receipt

They talk only through the store, so a voice loop in another thread (or
another process on the same store) queues a reply and the connector delivers
it; nothing is kept in memory that a crash could lose.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nio import RoomReadMarkersError
from tidings.device.matrix.client import CONNECTION_ERRORS, open_client
from tidings.device.matrix.credentials import Credentials
from tidings.device.matrix.delivery import Backoff, Delivery, backoff_seconds, deliver
from tidings.device.matrix.errors import MatrixError
from tidings.device.matrix.sync import CONNECTOR, SyncFailed, SyncReport, sync_once
from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer

log = logging.getLogger("tidings")
RECEIPT = "matrix.receipt."  # + room id: the event id last acknowledged as read


@dataclass(frozen=True)
class ConnectorSettings:
    sync_timeout_ms: int = 30000
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    poll_seconds: float = 0.2  # how soon a reply queued in the store is noticed
    encryption: bool = True


class MatrixConnector:
    def __init__(self, credentials: Credentials, store_path: Path, *, wearer: Wearer = Wearer(),
                 keys_dir: Path | None = None, settings: ConnectorSettings = ConnectorSettings(),
                 on_messages: Callable[[SyncReport], None] | None = None,
                 on_delivery: Callable[[Delivery], None] | None = None) -> None:
        self.credentials = credentials
        self.store_path = store_path
        self.wearer = wearer
        self.keys_dir = keys_dir if settings.encryption else None
        self.settings = settings
        self.on_messages = on_messages
        self.on_delivery = on_delivery
        self.backoff = Backoff(settings.retry_min_seconds, settings.retry_max_seconds)
        self.synced = False  # this process has synced once: its client knows the rooms
        self.first_sync_done = asyncio.Event()  # ... or has tried and failed

    # -- one pass of each job -------------------------------------------------------

    async def sync(self, client, store: Store, *, full_state: bool = False) -> SyncReport:
        report = await sync_once(client, store, self.wearer, timeout_ms=self.settings.sync_timeout_ms,
                                 full_state=full_state)
        if client.olm is not None:
            await self._keys(client)
        if report.added and self.on_messages:
            self.on_messages(report)
        return report

    async def deliver_due(self, client, store: Store) -> list[Delivery]:
        results = []
        for entry in store.pending_deliveries(CONNECTOR):
            if not self.backoff.due(entry):
                continue
            result = await deliver(client, store, entry, rooms_known=self.synced)
            if not result.delivered and not result.permanent:
                self.backoff.failed(result.entry)
            results.append(result)
            if self.on_delivery:
                self.on_delivery(result)
        return results

    async def send_receipts(self, client, store: Store) -> int:
        sent = 0
        acknowledged = store.connector_states(RECEIPT)
        for room_id, heard in sorted(store.newest_read(CONNECTOR).items()):
            if acknowledged.get(room_id) == heard:
                continue
            reply = await client.room_read_markers(room_id, fully_read_event=heard, read_event=heard)
            if isinstance(reply, RoomReadMarkersError):
                log.warning("read receipt for %s not sent: %s", store.thread_title(room_id), reply.message)
                continue
            store.set_connector_state(RECEIPT + room_id, heard)
            sent += 1
        return sent

    async def _keys(self, client) -> None:
        """Keep this device's encryption keys published and its peers' keys known (end-to-end rooms)."""
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    # -- running ----------------------------------------------------------------------

    async def run_once(self) -> SyncReport:
        """One sync, then every due delivery and receipt: `tidings connect matrix --once`."""
        client = open_client(self.credentials, self.keys_dir)
        try:
            with Store(self.store_path) as store:
                report = await self.sync(client, store, full_state=True)
                self.synced = True
                await self.deliver_due(client, store)
                await self.send_receipts(client, store)
                return report
        except CONNECTION_ERRORS as exc:
            raise MatrixError(f"cannot reach the homeserver {self.credentials.homeserver}: {exc}") from None
        finally:
            await client.close()

    async def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: sync, deliver and acknowledge, riding out a homeserver that goes away."""
        client = open_client(self.credentials, self.keys_dir)
        try:
            with Store(self.store_path) as sync_store, Store(self.store_path) as outbox_store:
                jobs = [asyncio.create_task(self._sync_loop(client, sync_store)),
                        asyncio.create_task(self._outbox_loop(client, outbox_store))]
                watcher = asyncio.create_task(asyncio.to_thread(stop.wait))
                done, _ = await asyncio.wait([*jobs, watcher], return_when=asyncio.FIRST_COMPLETED)
                for task in jobs:
                    task.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                stop.set()
                await watcher
                failed = [task.exception() for task in done if task is not watcher and task.exception()]
                if failed:
                    raise failed[0]
                if self.synced:  # a reply confirmed just before stopping still goes out
                    await self._last_deliveries(client, outbox_store)
        finally:
            await client.close()

    async def _last_deliveries(self, client, store: Store, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.deliver_due(client, store), timeout)
        except (TimeoutError, *CONNECTION_ERRORS):
            log.warning("stopped with replies still in the outbox; they are delivered on the next connect")

    async def _sync_loop(self, client, store: Store) -> None:
        failures = 0
        full_state = True
        while True:
            try:
                await self.sync(client, store, full_state=full_state)
                full_state = False
                self.synced = True
                self.first_sync_done.set()
                if failures:
                    log.warning("the homeserver %s is reachable again", self.credentials.homeserver)
                failures = 0
            except (SyncFailed, *CONNECTION_ERRORS) as exc:
                if isinstance(exc, SyncFailed) and exc.status == "M_UNKNOWN_TOKEN":
                    raise MatrixError("the homeserver no longer accepts this device's login; log in again with "
                                      "`tidings connect matrix --login`") from None
                self.first_sync_done.set()
                failures += 1
                wait = backoff_seconds(self.settings.retry_min_seconds, self.settings.retry_max_seconds, failures)
                if failures == 1:
                    log.warning("cannot sync with %s (%s); retrying, every %.0f s at most",
                                self.credentials.homeserver, exc, self.settings.retry_max_seconds)
                await asyncio.sleep(wait)

    async def _outbox_loop(self, client, store: Store) -> None:
        # Rooms known (and in encrypted ones the members' keys) before the first send, unless the
        # homeserver cannot be reached at all: then the attempts, and the wearer hearing of them, start now.
        await self.first_sync_done.wait()
        while True:
            await self.deliver_due(client, store)
            try:
                await self.send_receipts(client, store)
            except CONNECTION_ERRORS:
                pass  # the next pass sends them; delivery already says the homeserver is away
            await asyncio.sleep(self.settings.poll_seconds)


class ConnectorThread:
    """The connector on a thread of its own, beside the voice loop."""

    def __init__(self, connector: MatrixConnector) -> None:
        self.connector = connector
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="tidings-matrix", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.connector.run(self.stop_event))
        except BaseException as exc:  # reported by whoever started the thread
            self.error = exc
            log.error("the Matrix connector stopped: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:  # room for the last deliveries (10 s at most)
        self.stop_event.set()
        self._thread.join(timeout)
