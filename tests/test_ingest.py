"""Messages in: parsing, validation, the store, and the local HTTP endpoint."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tidings.device.ingest import IngestServer, ingest_file
from tidings.device.messages import Message, MessageError, parse_lines
from tidings.device.store import Store


def line(**fields) -> str:
    base = {"id": "m1", "thread": "t", "sender": "Ann", "text": "hi", "sent_at": "2026-11-20T10:00:00+01:00"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}, ensure_ascii=False)


def parse_one(raw: str | bytes) -> Message | MessageError:
    [item] = list(parse_lines([raw]))
    return item


@pytest.mark.parametrize(
    "raw, reason",
    [
        ('{"id": "m1", "thread": ', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        (line(sender=None), "missing field(s): sender"),
        (line(text=None, sent_at=None), "missing field(s): text, sent_at"),
        (line(text=42), "field 'text' must be a string"),
        (line(id="  "), "field 'id' is empty"),
        (line(sent_at="yesterday"), "not an ISO-8601 time"),
        (line(text="x" * 1_000_001), "the limit is 1,000,000"),
        ('{"id": "m1", "thread": "t", "sender": "A", "text": "\\ud800", "sent_at": "2026-11-20T10:00:00Z"}',
         "unpaired surrogate"),
        (b'{"id": "m1", "thread": "t", "sender": "A", "text": "\xff\xfe", "sent_at": "2026-11-20T10:00:00Z"}',
         "not valid UTF-8"),
    ],
)
def test_bad_lines_get_a_clear_reason(raw, reason):
    error = parse_one(raw)
    assert isinstance(error, MessageError)
    assert reason in error.reason
    assert error.line == 1


def test_good_lines_keep_unicode_and_extra_fields():
    rtl = "الاجتماع غدا الساعة 6 🙂"
    message = parse_one(line(text=rtl, reply_to="m0", attachments=[{"kind": "photo"}]))
    assert isinstance(message, Message)
    assert message.text == rtl
    assert message.extra == {"reply_to": "m0", "attachments": [{"kind": "photo"}]}
    assert message.sent_at.utcoffset().total_seconds() == 3600
    assert parse_one(line(sent_at="2026-11-20T09:00:00Z")).sent_at.tzname() == "UTC"


def test_a_megabyte_message_is_accepted():
    text = ("word " * 200_000)[:1_000_000]
    message = parse_one(line(text=text))
    assert isinstance(message, Message) and len(message.text) == 1_000_000


def test_store_keeps_good_lines_around_bad_ones_and_ignores_duplicate_ids(tmp_path: Path):
    feed = tmp_path / "feed.jsonl"
    lines = [line(id="a"), "not json", line(id="b", text="ok 👍"), "", line(id="a", text="changed"), line(id="c", sender=None)]
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Store(tmp_path / "s.db") as store:
        report = ingest_file(store, feed)
        assert (report.added, report.duplicates) == (2, 1)
        assert [(e.line, e.reason.split(":")[0]) for e in report.errors] == [(2, "malformed JSON"), (6, "missing field(s)")]
        again = ingest_file(store, feed)
        assert (again.added, again.duplicates) == (0, 3)
        assert store.message_count() == 2
        assert [m.text for m in store.unread_messages("t")] == ["hi", "ok 👍"]  # the first "a" wins
        # Rejected lines are kept, so nothing that arrived is lost.
        assert [(line_no, reason.split(":")[0]) for _, line_no, reason in store.rejected_lines()][:2] == [
            (2, "malformed JSON"), (6, "missing field(s)")]


def test_messages_are_ordered_by_time_across_time_zones(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.add(parse_lines([
            line(id="late", sent_at="2026-11-20T10:30:00+01:00"),   # 09:30 UTC
            line(id="early", sent_at="2026-11-20T05:00:00-04:00"),  # 09:00 UTC
        ]), "test")
        assert [m.id for m in store.unread_messages("t")] == ["early", "late"]


def test_summary_marks_messages_read_atomically(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.add(parse_lines([line(id="a"), line(id="b", thread="u")]), "test")
        store.record_summary("t", ["a"], {"summary": "Ann said hi."})
        assert store.unread_threads() == ["u"]
        assert store.summaries("t") == [{"summary": "Ann said hi."}]


def test_drafts_go_to_the_outbox_once(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        draft = store.add_draft("t", "See you at 6")
        store.update_draft(draft.id, "See you at 6pm")
        entry = store.queue_draft(draft.id)
        assert (entry.thread, entry.text) == ("t", "See you at 6pm")
        with pytest.raises(ValueError, match="not open"):
            store.queue_draft(draft.id)
        assert len(store.outbox()) == 1


def test_http_endpoint_stores_messages_and_reports_bad_lines(tmp_path: Path):
    server = IngestServer(tmp_path / "s.db", "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = "\n".join([line(id="h1"), line(id="h2"), line(id="h1")]).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{url}/messages", data=body)) as response:
            assert json.load(response) == {"added": 2, "duplicates": 1, "errors": []}
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(urllib.request.Request(f"{url}/messages", data=b'{"id": 1}\n' + line(id="h3").encode()))
        assert bad.value.code == 400
        report = json.load(bad.value)
        assert report["added"] == 1 and report["errors"][0]["line"] == 1
        with urllib.request.urlopen(f"{url}/health") as response:
            assert json.load(response) == {"ok": True, "messages": 3}
    finally:
        server.shutdown()
        server.server_close()
