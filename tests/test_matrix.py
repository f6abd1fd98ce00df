"""The Matrix connector against a real Synapse homeserver on loopback.

One Synapse (from the `matrix-synapse` package, SQLite, 127.0.0.1) serves the
module; each test registers its own users and rooms on it, so tests do not see
each other's messages. The other people in a test (Mom, Sam) talk to Synapse
through its client-server API directly; the wearer's side is the real device
code: `tidings connect matrix` as a process, or the connector in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from tidings.bench.homeserver import Account, Homeserver
from tidings.device.matrix.client import login
from tidings.device.matrix.connector import ConnectorSettings, ConnectorThread, MatrixConnector
from tidings.device.matrix.credentials import Credentials, CredentialsError
from tidings.device.matrix.delivery import Delivery, notice
from tidings.device.matrix.events import Skipped, to_message
from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
FAST = ConnectorSettings(sync_timeout_ms=500, retry_min_seconds=0.2, retry_max_seconds=1.0, poll_seconds=0.05)


@pytest.fixture(scope="module")
def hs(tmp_path_factory) -> Homeserver:
    server = Homeserver(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()


class People:
    """A wearer (Alex) and the people who write to them, fresh for each test."""

    def __init__(self, hs: Homeserver, tmp_path: Path) -> None:
        self.hs = hs
        tag = uuid.uuid4().hex[:6]
        self.alex = hs.register(f"alex{tag}", PASSWORD, displayname="Alex")
        self.mom = hs.register(f"mom{tag}", PASSWORD, displayname="Mom")
        self.sam = hs.register(f"sam{tag}", PASSWORD, displayname="Sam")
        self.store_path = tmp_path / "device.db"
        self.credentials = asyncio.run(login(hs.url, self.alex.user_id, password=PASSWORD))

    def room(self, owner: Account, name: str | None = None, *others: Account) -> str:
        room = self.hs.create_room(owner, name, tuple(a.user_id for a in (self.alex, *others)), direct=name is None)
        self.hs.join(self.alex, room)
        for other in others:
            self.hs.join(other, room)
        return room

    def connector(self, **kwargs) -> MatrixConnector:
        return MatrixConnector(self.credentials, self.store_path, wearer=Wearer("Alex"),
                               keys_dir=self.store_path.parent / "keys", settings=FAST, **kwargs)

    def queue_reply(self, room: str, text: str) -> int:
        with Store(self.store_path) as store:
            return store.queue_draft(store.add_draft(room, text).id).id

    def seen_by(self, account: Account, room: str) -> list[tuple[str, str]]:
        return [(e["sender"], e["content"].get("body")) for e in self.hs.messages(account, room, limit=500)
                if e["type"] == "m.room.message" and e["content"]]


@pytest.fixture
def people(hs, tmp_path) -> People:
    return People(hs, tmp_path)


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cli(config: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidings.device.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, **kwargs)


def write_config(tmp_path: Path, people: People, name: str = "tidings.toml", **matrix) -> Path:
    path = tmp_path / name
    values = {"homeserver": people.hs.url, "user_id": people.alex.user_id,
              "credentials": str(tmp_path / "matrix" / "credentials.json"),
              "keys_dir": str(tmp_path / "matrix" / "keys"), "sync_timeout_ms": 1000,
              "retry_min_seconds": 0.2, "retry_max_seconds": 1.0, **matrix}
    lines = ["[wearer]", 'name = "Alex"', "[store]", f'path = "{people.store_path}"', "[matrix]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- events and credentials, without a server ----------------------------------------------


def event(content: dict, event_id: str = "$e1", sender: str = "@mom:example.org") -> dict:
    return {"type": "m.room.message", "event_id": event_id, "sender": sender, "origin_server_ts": 1764600000000,
            "content": content}


@pytest.mark.parametrize(("content", "text"), [
    ({"msgtype": "m.text", "body": "Can you pick up Lily at 5:30?"}, "Can you pick up Lily at 5:30?"),
    ({"msgtype": "m.notice", "body": "Build passed"}, "Build passed"),
    ({"msgtype": "m.emote", "body": "is running late"}, "Mom is running late"),
    ({"msgtype": "m.image", "body": "IMG_2211.jpg", "url": "mxc://x/y"}, "<photo>"),
    ({"msgtype": "m.image", "body": "the new sofa!", "filename": "IMG_2211.jpg", "url": "mxc://x/y"},
     "<photo> the new sofa!"),
    ({"msgtype": "m.file", "body": "invoice.pdf", "url": "mxc://x/y"}, "<file invoice.pdf>"),
    ({"msgtype": "m.audio", "body": "voice.ogg", "url": "mxc://x/y"}, "<voice message>"),
    ({"msgtype": "m.text", "body": "> <@sam:example.org> 7 or 8?\n\n8 works",
      "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}}, "8 works"),
])
def test_each_kind_of_message_is_stored_as_words_the_wearer_can_hear(content, text):
    message = to_message(event(content), room_id="!family:example.org", sender_name="Mom")
    assert not isinstance(message, Skipped)
    assert (message.id, message.thread, message.sender, message.text) == ("$e1", "!family:example.org", "Mom", text)
    assert message.sent_at.year == 2025 and message.extra["matrix_sender"] == "@mom:example.org"


@pytest.mark.parametrize(("evt", "reason"), [
    (event({}), "deleted by its sender"),
    (event({"msgtype": "m.text", "body": "* 8pm", "m.new_content": {"msgtype": "m.text", "body": "8pm"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"}}), "an edit"),
    (event({"msgtype": "m.key.verification.request", "body": "verify?"}), "no text to read"),
    ({"type": "m.room.member", "event_id": "$m", "content": {"membership": "join"}}, "not a message"),
])
def test_what_is_not_a_message_is_skipped_with_a_reason(evt, reason):
    skipped = to_message(evt, room_id="!r:x", sender_name="Mom")
    assert isinstance(skipped, Skipped) and reason in skipped.reason


def test_the_login_file_is_private_and_the_token_is_never_printed(tmp_path):
    path = tmp_path / "matrix" / "credentials.json"
    login_details = Credentials("https://hs.example", "@alex:hs.example", "DEVICE", "syt_secret_token")
    login_details.save(path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert "syt_secret_token" not in repr(login_details)
    assert Credentials.load(path) == login_details
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others"):
        Credentials.load(path)
    path.chmod(0o600)
    path.write_text("{not json")
    with pytest.raises(CredentialsError, match="log in again"):
        Credentials.load(path)


# -- against the homeserver -------------------------------------------------------------------


def test_login_errors_are_clear_and_nothing_is_stored(hs, people, tmp_path):
    config = write_config(tmp_path, people)
    wrong = cli(config, "connect", "matrix", "--login-only", env={"TIDINGS_MATRIX_PASSWORD": "wrong"})
    assert wrong.returncode == 2 and "refused the login" in wrong.stderr
    down = write_config(tmp_path, people, "down.toml", homeserver="http://127.0.0.1:9")
    unreachable = cli(down, "connect", "matrix", "--login-only", env={"TIDINGS_MATRIX_PASSWORD": PASSWORD})
    assert unreachable.returncode == 2 and "cannot reach the homeserver" in unreachable.stderr
    assert not (tmp_path / "matrix" / "credentials.json").exists()
    ok = cli(config, "connect", "matrix", "--login-only", env={"TIDINGS_MATRIX_PASSWORD": PASSWORD})
    assert ok.returncode == 0, ok.stderr
    token = json.loads((tmp_path / "matrix" / "credentials.json").read_text())["access_token"]
    assert token not in ok.stderr + ok.stdout and PASSWORD not in (tmp_path / "matrix" / "credentials.json").read_text()


def test_first_sync_is_history_then_each_new_message_is_stored_once_with_its_room_and_sender(people):
    family = people.room(people.mom)
    dinner = people.room(people.sam, "Friday dinner", people.mom)
    people.hs.send(people.mom, family, "From last week: thanks for the flowers")
    connector = people.connector()
    first = asyncio.run(connector.run_once())
    assert first.history and first.added == 1
    with Store(people.store_path) as store:
        assert store.unread_threads() == []  # history is never announced
    people.hs.send(people.mom, family, "Can you pick up Lily at 5:30?")
    people.hs.send(people.sam, dinner, "Booked 8pm, 7 was full")
    people.hs.send(people.mom, dinner, "invoice.pdf", msgtype="m.file", url="mxc://localhost/x")
    people.hs.send(people.alex, dinner, "Great, see you there")  # the wearer, from their phone
    people.hs.send(people.mom, dinner, "is bringing dessert", msgtype="m.emote")
    second = asyncio.run(people.connector().run_once())
    assert (second.history, second.added, second.duplicates) == (False, 5, 0)
    with Store(people.store_path) as store:
        assert store.thread_title(family) == "Mom" and store.thread_title(dinner) == "Friday dinner"
        assert [(m.sender, m.text) for m in store.unread_messages(family)] == [
            ("Mom", "Can you pick up Lily at 5:30?")]
        # What came before the wearer's own message is read: they answered it on their phone.
        assert [(m.sender, m.text) for m in store.unread_messages(dinner)] == [("Mom", "Mom is bringing dessert")]
        assert [m.sender for m in store.recent_messages(dinner)] == ["Sam", "Mom", "Alex", "Mom"]
    third = asyncio.run(people.connector().run_once())  # a restart: a fresh client, the stored token
    assert (third.added, third.duplicates) == (0, 0)


def test_a_lost_token_resyncs_without_storing_anything_twice(people):
    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    for i in range(5):
        people.hs.send(people.mom, family, f"message {i}")
    asyncio.run(people.connector().run_once())
    with Store(people.store_path) as store:
        count = store.message_count()
        store.db.execute("DELETE FROM connector_state WHERE key = 'matrix.since'")
    # Synapse may answer a repeated initial sync from its cache (up to 2 minutes old); the sync after it
    # then brings the rest. Either way every message comes again, and none is stored twice.
    again = [asyncio.run(people.connector().run_once()) for _ in range(2)]
    assert again[0].history and sum(r.added for r in again) == 0 and sum(r.duplicates for r in again) == 5
    with Store(people.store_path) as store:
        assert store.message_count() == count


def test_a_gap_longer_than_one_sync_is_filled_from_the_rooms_history(people):
    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    sent = [f"step {i}" for i in range(130)]  # more than a sync's timeline of 50
    for text in sent:
        people.hs.send(people.mom, family, text)
    report = asyncio.run(people.connector().run_once())
    assert report.added == 130
    with Store(people.store_path) as store:
        assert [m.text for m in store.unread_messages(family)] == sent


def test_a_deleted_message_leaves_the_store_with_a_log_line(people, caplog):
    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    wrong = people.hs.send(people.mom, family, "oops, wrong chat")
    asyncio.run(people.connector().run_once())
    people.hs.redact(people.mom, family, wrong)
    with caplog.at_level(logging.INFO, logger="tidings"):
        report = asyncio.run(people.connector().run_once())
    assert report.removed == 1
    assert f"deleted by its sender ({wrong}): removed from the store" in caplog.text
    with Store(people.store_path) as store:
        assert store.unread_messages(family) == []


def test_a_confirmed_reply_reaches_the_room_once_and_announced_messages_get_a_read_receipt(people):
    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    ask = people.hs.send(people.mom, family, "Can you pick up Lily at 5:30?")
    asyncio.run(people.connector().run_once())
    with Store(people.store_path) as store:
        messages = store.unread_messages(family)
        store.record_summary(family, [m.id for m in messages], {"summary": "Mom asks you to pick up Lily at 5:30."})
    asyncio.run(people.connector().run_once())
    assert people.hs.receipts(people.mom, family).get(people.alex.user_id) == ask  # Mom sees Alex has read it
    entry = people.queue_reply(family, "Yes, I'll pick her up at 5:30.")
    asyncio.run(people.connector().run_once())
    asyncio.run(people.connector().run_once())  # nothing left to do: no second copy
    assert people.seen_by(people.mom, family).count((people.alex.user_id, "Yes, I'll pick her up at 5:30.")) == 1
    with Store(people.store_path) as store:
        delivered = store.outbox_entry(entry)
        assert delivered.sent_at and delivered.remote_id.startswith("$") and not delivered.pending


def test_a_reply_to_a_room_the_wearer_left_fails_for_good_with_a_clear_message(people, caplog):
    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    entry = people.queue_reply(family, "On my way")
    people.hs.request("POST", f"/_matrix/client/v3/rooms/{family}/leave", {}, people.alex.access_token)
    deliveries: list[Delivery] = []
    with caplog.at_level(logging.WARNING, logger="tidings"):
        asyncio.run(people.connector(on_delivery=deliveries.append).run_once())
    assert len(deliveries) == 1 and deliveries[0].permanent and not deliveries[0].delivered
    assert notice(deliveries[0], "Mom").startswith("I couldn't send your reply to Mom:")
    assert f"outbox entry {entry} to {family} not delivered" in caplog.text and "giving up" in caplog.text
    asyncio.run(people.connector(on_delivery=deliveries.append).run_once())
    assert len(deliveries) == 1  # given up: not tried again


def test_a_reply_to_a_room_that_does_not_exist_fails_for_good_with_a_clear_log_line(people, caplog):
    asyncio.run(people.connector().run_once())
    ghost = "!no-such-room:localhost"
    with Store(people.store_path) as store:  # a thread the store knows as a Matrix room, which the server does not
        store.add_synced([], state={}, titles={ghost: "Old group"}, connector="matrix")
    people.queue_reply(ghost, "Still on for Friday?")
    deliveries: list[Delivery] = []
    with caplog.at_level(logging.WARNING, logger="tidings"):
        asyncio.run(people.connector(on_delivery=deliveries.append).run_once())
    assert len(deliveries) == 1 and deliveries[0].permanent
    assert notice(deliveries[0], "Old group") == ("I couldn't send your reply to Old group: that conversation "
                                                  "no longer exists.")
    assert f"to {ghost} not delivered (attempt 1, giving up)" in caplog.text


def test_a_reply_sent_while_the_homeserver_is_down_is_delivered_once_it_is_back(hs, people):
    family = people.room(people.mom)
    deliveries: list[Delivery] = []
    link = ConnectorThread(people.connector(on_delivery=deliveries.append))
    link.start()
    try:
        wait_for(lambda: link.connector.synced, what="the first sync")
        hs.stop()
        people.queue_reply(family, "Running ten minutes late")
        wait_for(lambda: len(deliveries) >= 2, what="two failed attempts")
        assert not any(d.delivered for d in deliveries)
        heard = [notice(d, "Mom") for d in deliveries]
        assert heard[0] == "I couldn't send your reply to Mom yet; I'll keep trying." and heard[1] is None
        hs.start()
        wait_for(lambda: any(d.delivered for d in deliveries), timeout=60, what="the delivery")
        assert notice(deliveries[-1], "Mom") == "Your reply to Mom is sent now."
    finally:
        hs.start()
        link.stop()
    assert link.error is None
    assert people.seen_by(people.mom, family).count((people.alex.user_id, "Running ten minutes late")) == 1


# -- crashes: SIGKILL at random moments, 20 times each ------------------------------------------


def connect_process(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tidings.device.cli", "--config", str(config), "connect", "matrix"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_during_sync_20_times_loses_and_duplicates_nothing(people, tmp_path):
    config = write_config(tmp_path, people)
    assert cli(config, "connect", "matrix", "--once", env={"TIDINGS_MATRIX_PASSWORD": PASSWORD}).returncode == 0
    family = people.room(people.mom)
    dinner = people.room(people.sam, "Friday dinner")
    sent: list[str] = []
    stop = threading.Event()

    def chatter() -> None:  # Mom and Sam keep writing while the device crashes and restarts
        i = 0
        while not stop.is_set():
            author, room = (people.mom, family) if i % 2 else (people.sam, dinner)
            sent.append(people.hs.send(author, room, f"message {i}"))
            i += 1
            time.sleep(0.02)

    writer = threading.Thread(target=chatter)
    writer.start()
    rng = random.Random(0)
    stored_after_kill: list[int] = []
    try:
        for _ in range(20):
            process = connect_process(config)
            time.sleep(rng.uniform(0.8, 2.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            with Store(people.store_path) as store:
                stored_after_kill.append(store.message_count())
    finally:
        stop.set()
        writer.join()
    final = cli(config, "connect", "matrix", "--once")
    assert final.returncode == 0, final.stderr
    with Store(people.store_path) as store:
        stored = [row[0] for row in store.db.execute("SELECT id FROM messages WHERE thread IN (?, ?)",
                                                       (family, dinner))]
    assert len(sent) > 100
    print("stored after each kill:", stored_after_kill)
    assert len(set(stored_after_kill)) >= 10  # most runs got to store a sync before they were killed
    assert sorted(stored) == sorted(sent)  # every message, each once


def test_killed_during_delivery_20_times_each_reply_reaches_the_room_exactly_once(people, tmp_path):
    config = write_config(tmp_path, people)
    assert cli(config, "connect", "matrix", "--once", env={"TIDINGS_MATRIX_PASSWORD": PASSWORD}).returncode == 0
    family = people.room(people.mom)
    assert cli(config, "connect", "matrix", "--once").returncode == 0
    rng = random.Random(1)
    replies: list[str] = []
    left: list[int] = []
    for i in range(20):
        batch = [f"reply {i}.{j}" for j in range(5)]
        for text in batch:
            people.queue_reply(family, text)
        replies += batch
        process = connect_process(config)
        with Store(people.store_path) as store:
            if i % 2:  # at a random moment
                time.sleep(rng.uniform(1.0, 3.5))
            else:  # between two sends: as soon as the first of the batch is marked delivered
                wait_for(lambda: len(store.pending_deliveries("matrix")) < len(batch) + (left[-1] if left else 0),
                         timeout=60, what="a first delivery")
            process.send_signal(signal.SIGKILL)
            process.wait()
            left.append(len(store.pending_deliveries("matrix")))
    print("undelivered after each kill:", left)
    assert any(n > 0 for n in left[::2])  # killed mid-batch
    final = cli(config, "connect", "matrix", "--once")
    assert final.returncode == 0 and json.loads(final.stdout)["undelivered"] == 0, final.stderr
    seen = [body for sender, body in people.seen_by(people.mom, family) if sender == people.alex.user_id]
    assert sorted(seen) == sorted(replies)  # each once, none lost


def test_a_send_that_reached_the_homeserver_but_not_the_store_is_not_sent_twice(people):
    """The crash the kills above can only hit by chance: after the homeserver took the reply, before the
    store recorded it. Sending the row again uses the same transaction id, and the homeserver answers
    with the first event instead of posting a second."""
    from tidings.device.matrix.client import open_client
    from tidings.device.matrix.delivery import deliver

    family = people.room(people.mom)
    asyncio.run(people.connector().run_once())
    entry_id = people.queue_reply(family, "See you at eight")

    async def send_twice() -> tuple[str, str]:
        client = open_client(people.credentials, None)
        try:
            with Store(people.store_path) as store:
                first = await deliver(client, store, store.outbox_entry(entry_id))
                store.db.execute("UPDATE outbox SET sent_at = NULL, remote_id = NULL WHERE id = ?", (entry_id,))
                second = await deliver(client, store, store.outbox_entry(entry_id))
            return first.entry.remote_id, second.entry.remote_id
        finally:
            await client.close()

    first, second = asyncio.run(send_twice())
    assert first == second
    assert people.seen_by(people.mom, family).count((people.alex.user_id, "See you at eight")) == 1


# -- the whole path, as the wearer runs it ------------------------------------------------------


@pytest.mark.model
def test_listen_with_matrix_announces_a_message_from_mom_and_delivers_the_dictated_reply(people, tmp_path):
    from tidings.bench.speech_corpus import Turn, script_audio, write_wav
    from tidings.device.voice.tts import HibariTts

    config = write_config(tmp_path, people)
    first = cli(config, "connect", "matrix", "--once", env={"TIDINGS_MATRIX_PASSWORD": PASSWORD})
    assert first.returncode == 0, first.stderr
    family = people.room(people.mom)
    people.hs.send(people.mom, family, "Can you pick up Lily from practice at 5:30 today?")
    people.hs.send(people.mom, family, "Dad is stuck at work until 6.")
    turns = [Turn(6, "Read."), Turn(8, "Reply."), Turn(2, "Tell her I will be there at six."), Turn(7, "Send.")]
    mic = write_wav(tmp_path / "in.wav", script_audio(HibariTts(), turns, tail=4).audio)
    listen = cli(config, "listen", "--matrix", "--mic-wav", str(mic), "--speaker-wav", str(tmp_path / "out.wav"))
    assert listen.returncode == 0, listen.stderr
    assert "[say] Two new messages from Mom." in listen.stderr
    assert "[sent]" in listen.stderr
    replies = [body for sender, body in people.seen_by(people.mom, family) if sender == people.alex.user_id]
    assert len(replies) == 1 and any(said in replies[0].lower() for said in ("there at six", "there at 6"))
    with Store(people.store_path) as store:
        assert store.unread_threads() == [] and not store.pending_deliveries("matrix")


# -- end-to-end encrypted rooms -------------------------------------------------------------------


class EncryptedMom:
    """Mom on an end-to-end encrypting client of her own (matrix-nio with its key store)."""

    def __init__(self, people: People, keys: Path) -> None:
        from nio import AsyncClient, AsyncClientConfig

        keys.mkdir()
        self.people = people
        self.client = AsyncClient(people.hs.url, people.mom.user_id, store_path=str(keys),
                                  config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))

    async def start_room(self) -> str:
        await self.client.login(PASSWORD)
        await self.sync()
        reply = await self.client.room_create(
            invite=[self.people.alex.user_id], is_direct=True,
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        self.people.hs.join(self.people.alex, reply.room_id)
        return reply.room_id

    async def sync(self):
        reply = await self.client.sync(timeout=0)
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        return reply

    async def say(self, room: str, text: str) -> None:
        await self.sync()
        await self.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text},
                                    ignore_unverified_devices=True)

    async def heard(self, room: str) -> list[str]:
        """Everything Alex wrote that Mom's client could decrypt."""
        reply = await self.sync()
        events = reply.rooms.join[room].timeline.events if room in reply.rooms.join else []
        return [e.body for e in events if getattr(e, "sender", "") == self.people.alex.user_id
                and hasattr(e, "body")]


def test_an_encrypted_room_is_read_and_answered_and_the_homeserver_sees_only_ciphertext(people, tmp_path):
    asyncio.run(people.connector().run_once())  # the device publishes its keys on its first sync

    async def conversation() -> tuple[str, list[str]]:
        mom = EncryptedMom(people, tmp_path / "mom-keys")
        try:
            room = await mom.start_room()
            await mom.say(room, "The door code is 4411, delete this after")
            await people.connector().run_once()
            people.queue_reply(room, "Got it, thanks")
            await people.connector().run_once()
            return room, await mom.heard(room)
        finally:
            await mom.client.close()

    room, mom_heard = asyncio.run(conversation())
    with Store(people.store_path) as store:
        assert [(m.sender, m.text) for m in store.unread_messages(room)] == [
            ("Mom", "The door code is 4411, delete this after")]
    assert mom_heard == ["Got it, thanks"]
    on_server = [e for e in people.hs.messages(people.mom, room) if e["type"].startswith("m.room.")]
    assert not [e for e in on_server if e["type"] == "m.room.message"]  # no plain text ever reached the server
    assert sum(e["type"] == "m.room.encrypted" for e in on_server) == 2


def test_with_encryption_off_an_encrypted_room_is_skipped_and_never_answered_in_plain_text(people, tmp_path, caplog):
    plain = ConnectorSettings(**{**FAST.__dict__, "encryption": False})
    connector = lambda **kw: MatrixConnector(people.credentials, people.store_path, wearer=Wearer("Alex"),  # noqa: E731
                                             settings=plain, **kw)
    asyncio.run(connector().run_once())

    async def mom_writes() -> str:
        mom = EncryptedMom(people, tmp_path / "mom-keys")
        try:
            room = await mom.start_room()
            await mom.say(room, "The door code is 4411")
            return room
        finally:
            await mom.client.close()

    room = asyncio.run(mom_writes())
    with caplog.at_level(logging.INFO, logger="tidings"):
        report = asyncio.run(connector().run_once())
    assert report.added == 0 and any("no key for it" in s.reason for s in report.skipped)
    assert "encrypted, and this device has no key for it" in caplog.text
    people.queue_reply(room, "ok")
    deliveries: list[Delivery] = []
    asyncio.run(connector(on_delivery=deliveries.append).run_once())
    assert deliveries and deliveries[0].permanent and "encryption is off" in deliveries[0].error
    assert not [e for e in people.hs.messages(people.mom, room) if e["type"] == "m.room.message"]


@pytest.mark.model
def test_the_latency_benchmark_times_both_paths_and_saves_its_figures(tmp_path):
    from tidings.bench.matrix_bench import run

    report = run(2, tmp_path, quick=True, progress=False)
    saved = json.loads((tmp_path / "matrix.json").read_text())
    assert (tmp_path / "matrix.png").stat().st_size > 10_000
    for kind in ("matrix", "direct"):
        assert saved[kind]["timed"] + len(saved[kind]["not_timed"]) == 2
        for trial in saved[kind]["trials"]:
            assert trial["announcement"] and trial["sender"] in trial["announcement"]
    timed = [t for t in saved["matrix"]["trials"] if t["latency_s"] is not None]
    assert timed and all(0 < t["homeserver_to_store_s"] < t["latency_s"] for t in timed)
    assert report["ratio_p95"] == saved["ratio_p95"]
