"""The chat example (examples/chat): two Chromium pages (Playwright) exchange messages in a room
and a third joins and sees the history (js/chat_test.js); the load script drives simulated users
over WebSockets and every message reaches every member of its room."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests/e2e/js"


def test_chat_in_three_browser_pages(broker_factory):
    if shutil.which("chromium") is None or shutil.which("node") is None \
            or not (JS / "node_modules/playwright-core").exists():
        pytest.skip("chromium, node or playwright-core is not installed")
    b = broker_factory(http=True)
    p = subprocess.run(["node", str(JS / "chat_test.js"), b.http, str(ROOT / "target/e2e-artifacts/chat")],
                       capture_output=True, text=True, timeout=200)
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    assert p.stdout.strip().endswith("ok")


def test_chat_load_script_delivers_every_message(broker_factory):
    b = broker_factory(http=True)
    p = subprocess.run([sys.executable, str(ROOT / "examples/chat/load.py"), "--url", b.http, "--users", "40",
                        "--rooms", "4", "--messages", "5", "--interval-ms", "100", "--json"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(r)
    # 40 users in 4 rooms of 10, 5 messages each: each reaches the 10 members of its room.
    assert r["sent"] == 200 and r["expected"] == 2000 and r["delivered"] == 2000
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
