"""A small Chrome DevTools Protocol client for browser tests: starts Debian's Chromium
headless with a private profile and a remote-debugging port, attaches to its page over a
WebSocket, and collects JavaScript exceptions and console errors while the test drives it."""

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its debugging port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = []
        while not pages:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if not pages:
                time.sleep(0.1)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.next_id = 0
        self.errors = []  # JavaScript exceptions and console.error calls
        for domain in ("Runtime", "Page", "Log"):
            self.send(f"{domain}.enable")

    def _event(self, m):
        method, p = m.get("method"), m.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(d.get("exception", {}).get("description") or d.get("text"))
        elif method == "Runtime.consoleAPICalled" and p["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error" \
                and p["entry"].get("source") == "javascript":
            self.errors.append(p["entry"]["text"])

    def send(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv(timeout=30))
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._event(m)

    def eval(self, expr):
        r = self.send("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=20):
        """Polls the JavaScript expression `expr` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            # A DOM node has no JSON value: it stands for true.
            v = self.eval(f"(() => {{ const v = ({expr}); return v instanceof Node ? true : v; }})()")
            if v:
                return v
            if time.monotonic() > deadline:
                text = self.eval("document.body.innerText")
                raise AssertionError(f"timed out waiting for {expr}; the page shows:\n{text}")
            time.sleep(0.1)

    def goto(self, url):
        self.send("Page.navigate", url=url)

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.proc.kill()
        self.proc.wait(10)
