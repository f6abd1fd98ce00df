"""The operator console over the state of a small real simulation: its JSON endpoints, and the page in Chromium.

The state comes from Flower's simulation engine with the real model, real
(tiny) local training, DP and the quality gate on a few dialogues. The page
test runs the real `tidings federation dashboard` command and Debian's
Chromium through Playwright: the page loads with no console error, shows the
rounds, picks up a round that finishes while it is open, and a rollback
chosen in the page (by mouse, then by keyboard alone) publishes the earlier
version again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")
pytest.importorskip("fastapi", reason="the dashboard needs the `train` extra")

from fastapi.testclient import TestClient  # noqa: E402

from tidings.federated.simulation import simulate  # noqa: E402
from tidings.server.dashboard.app import create_app  # noqa: E402
from tidings.server.dashboard.snapshot import Console  # noqa: E402
from tidings.server.operator import Operator  # noqa: E402
from tidings.server.registry import AdapterRegistry  # noqa: E402
from tidings.server.settings import FederationSettings  # noqa: E402

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
SCREENSHOT = REPO / "server" / "dashboard" / "screenshot.png"
ROUND = dict(clients_per_round=3, min_available=3, secagg=False, dp=True, dp_min_clients=1, noise_multiplier=0.1,
             local_steps=1, max_examples=4, max_seq_tokens=256, batch_tokens=256,
             gate=True, gate_dialogues=2, gate_threads=2, gate_rouge_tolerance=100.0, gate_complete_tolerance=1.0)


def settings(state: Path, rounds: int) -> FederationSettings:
    return FederationSettings(state_dir=str(state), rounds=rounds, **ROUND)


@pytest.fixture(scope="module")
def one_round(tmp_path_factory) -> Path:
    """The operator's state after one real simulated round (version 1 published, version 0 the start)."""
    state = tmp_path_factory.mktemp("operator") / "state"
    [record] = simulate(settings(state, 1), devices=3)
    assert record.published and record.adapter_version == 1
    return state


def copy_of(state: Path, tmp_path: Path) -> Path:
    target = tmp_path / "state"
    shutil.copytree(state, target)
    return target


def client(state: Path, token: str | None = None) -> TestClient:
    return TestClient(create_app(Console(Operator(state), epsilon_budget=8.0), token))


ACT = {"X-Tidings-Action": "1"}


def test_the_snapshot_shows_rounds_versions_privacy_and_signatures(one_round: Path, tmp_path: Path):
    state = copy_of(one_round, tmp_path)
    doc = client(state).get("/api/snapshot").json()

    [round_1] = doc["rounds"]
    assert (round_1["round"], round_1["clients"], round_1["adapter_version"]) == (1, 3, 1)
    assert round_1["gate"]["passed"] and round_1["gate"]["candidate"]["dialogues"] == 2
    assert [(v["version"], v["signature"], v["files"]) for v in doc["versions"]] == [
        (0, "valid", "intact"), (1, "valid", "intact")]
    assert doc["privacy"]["epsilon"] == pytest.approx(round_1["epsilon"]) and doc["privacy"]["epsilon"] > 0
    assert doc["privacy"]["budget"] == 8.0 and doc["privacy"]["over_budget"]  # noise 0.1 for 3 devices: ε ~ 100
    assert doc["devices"] == {"reachable": False, "devices": []}  # a simulation serves no SuperLink
    assert doc["serving"] is None

    # A version.json changed after signing is shown as such, and so is a changed adapter file.
    version_1 = AdapterRegistry(state).dir(1)
    manifest = json.loads((version_1 / "version.json").read_text())
    (version_1 / "version.json").write_text(json.dumps({**manifest, "round": 7}, indent=2))
    with open(AdapterRegistry(state).dir(0) / "adapter.gguf", "ab") as f:
        f.write(b"\0")
    changed = client(state).get("/api/snapshot").json()
    assert [(v["signature"], v["files"]) for v in changed["versions"]] == [("valid", "CHANGED"), ("INVALID", "intact")]
    assert changed["revision"] != doc["revision"]

    charts = client(state).get("/api/charts").json()
    assert set(charts) == {"chart-rounds", "chart-privacy", "chart-upload", "chart-versions"}
    assert charts["chart-rounds"]["data"][0]["y"] == [round_1["train_loss"]]


def test_actions_need_the_header_ask_nothing_impossible_and_are_logged(one_round: Path, tmp_path: Path):
    state = copy_of(one_round, tmp_path)
    api = client(state)

    assert api.post("/api/rollback", json={"to": 0}).status_code == 403  # no header: not from the page
    assert len(AdapterRegistry(state).versions()) == 2

    refused = api.post("/api/promote", json={}, headers=ACT)
    assert refused.status_code == 409 and "no canary" in refused.json()["error"]
    done = api.post("/api/rollback", json={"to": 0}, headers=ACT)
    assert done.status_code == 200, done.text
    newest = AdapterRegistry(state).newest()
    assert (newest.version, newest.rolled_back_to) == (2, 0)
    doc = api.get("/api/snapshot").json()
    assert doc["rollout"]["promoted"] == 2 and doc["rollout"]["signature"] == "valid"
    assert [v["role"] for v in doc["versions"]] == ["earlier", "earlier", "promoted"]
    assert [(a["action"], "refused" in a) for a in doc["actions"]] == [("roll back", False), ("promote", True)]
    logged = [json.loads(line) for line in (state / "deploy" / "actions.jsonl").read_text().splitlines()]
    assert logged[-1]["arguments"] == {"to": 0} and logged[-1]["result"]["version"] == 2
    assert api.post("/api/revoke", json={"node_id": "1"}, headers=ACT).status_code == 409  # nothing served


def test_off_loopback_every_request_needs_the_token(one_round: Path, tmp_path: Path):
    api = client(copy_of(one_round, tmp_path), token="s3cret-token")
    assert api.get("/api/snapshot").status_code == 401
    assert api.get("/").status_code == 401
    assert api.get("/api/snapshot", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/snapshot", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    entered = api.get("/?token=s3cret-token", follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == "/"
    assert "samesite=strict" in entered.headers["set-cookie"].lower()
    assert api.get("/api/snapshot").status_code == 200  # the cookie it set


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (setup.sh installs it)")
def test_the_page_in_chromium_shows_rounds_live_and_rolls_back_by_mouse_and_keyboard(one_round: Path,
                                                                                        tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    state = copy_of(one_round, tmp_path)
    port = free_port()
    env = {**os.environ, "TIDINGS_CONFIG": str(REPO / "tidings.toml")}
    server = subprocess.Popen([sys.executable, "-m", "tidings.device.cli", "federation", "dashboard", "--state-dir",
                               str(state), "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "operator console" in server.stderr.readline()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            questions: list[str] = []
            page.on("dialog", lambda d: (questions.append(d.message), d.accept()))
            for _ in range(50):  # uvicorn takes a moment after printing the address
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:
                    time.sleep(0.2)
            rows = page.locator("#rounds tbody tr")
            expect(rows).to_have_count(1)
            expect(page.locator("#chart-rounds .main-svg").first).to_be_visible()
            expect(page.locator("#versions tbody tr")).to_have_count(2)

            # A round finishes while the page is open: it appears without a reload.
            simulate(settings(state, 2), devices=3)
            expect(rows).to_have_count(2, timeout=30_000)
            expect(page.locator("#versions tbody tr")).to_have_count(3)

            page.get_by_role("button", name="Roll back to v1").click()
            expect(page.locator("#versions tbody tr")).to_have_count(4)
            newest = AdapterRegistry(state).newest()
            assert (newest.version, newest.rolled_back_to) == (3, 1)
            assert questions == ["Publish v1 again, for every device?"]

            # The keyboard alone: Tab to the next rollback button and press Enter.
            page.locator("body").focus()
            for _ in range(60):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.textContent") == "Roll back to v2":
                    break
            else:
                pytest.fail("Tab never reached the 'Roll back to v2' button")
            page.keyboard.press("Enter")
            expect(page.locator("#versions tbody tr")).to_have_count(5)
            newest = AdapterRegistry(state).newest()
            assert (newest.version, newest.rolled_back_to) == (4, 2)
            expect(page.locator("#actions li")).to_have_count(2)

            page.wait_for_function("document.body.dataset.charted === document.body.dataset.revision")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("TIDINGS_UPDATE_SCREENSHOT"):
                shutil.copy(tmp_path / "dashboard.png", SCREENSHOT)
            browser.close()
        assert problems == []
    finally:
        server.terminate()
        server.wait(timeout=15)
