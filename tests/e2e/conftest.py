"""Fixtures that run a real `strom serve` for end-to-end tests.

API (every e2e test file uses only this):

``broker`` (function scope)
    A started broker with default options on a free 127.0.0.1 port over a fresh temp dir.

``broker_factory(*extra_args, start=True, **opts)`` (function scope)
    Makes more brokers, or brokers with options. Keyword options become CLI flags:
    ``auto_create_topics=False`` -> ``--auto-create-topics false``, ``num_partitions=3`` ->
    ``--num-partitions 3``, ``max_request_bytes=1024`` -> ``--max-request-bytes 1024``
    (underscores become dashes, booleans become ``true``/``false``). ``listeners="NAME://HOST:PORT,..."``
    replaces the ``--kafka-addr`` the fixture gives otherwise: ``.port`` / ``.bootstrap`` are then the
    first listener's (on 127.0.0.1). Positional ``extra_args``
    are passed to ``strom serve`` verbatim. ``env={...}`` adds environment variables.
    ``http=True`` puts the HTTP door on a free port (``.http_port``, ``.http`` = its base URL)
    and makes ``start()`` wait until ``/healthz`` answers 200 too. ``grpc=True`` puts the gRPC door
    on a free port (``.grpc_port``, ``.grpc`` = "127.0.0.1:PORT") and makes ``start()`` wait until
    it accepts connections (otherwise the gRPC door is off). ``start=False`` returns the broker
    unstarted.

Each broker object has:

- ``.bootstrap``  "127.0.0.1:PORT" (the port stays the same across restarts)
- ``.port``, ``.data_dir`` (a ``pathlib.Path``, removed at teardown), ``.proc`` (``subprocess.Popen``
  or None)
- ``.start()``    spawn and wait until the port accepts connections (20 s, else fail with the log);
  ``.spawned_at`` / ``.ready_at`` are the ``time.monotonic()`` of the last spawn and of its first
  accepted connection (polled every 10 ms)
- ``.stop()``     SIGTERM, wait (20 s), assert exit code 0
- ``.kill()``     SIGKILL, wait
- ``.restart()``  ``stop()`` then ``start()``
- ``.log``        everything the broker wrote to stderr/stdout so far, over all its runs (text)

The binary is ``$STROM_BIN``, else ``target/debug/strom``; `scripts/test` builds it, the fixture
never does. At teardown every broker still running is killed (even when the test failed) and its
temp dir removed. When a test fails, the brokers' logs are attached to the pytest report.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
READY_POLL_S = 0.01
STOP_TIMEOUT_S = 20.0


def strom_bin() -> str:
    path = os.environ.get("STROM_BIN") or str(ROOT / "target" / "debug" / "strom")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(f"strom binary not found at {path}: run scripts/test (or cargo build) first, or set STROM_BIN")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flag_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Broker:
    """One `strom serve` process (possibly started several times) over one data dir."""

    def __init__(self, extra_args=(), env=None, http=False, grpc=False, **opts):
        self.listeners = opts.get("listeners")
        if self.listeners:
            self.port = int(self.listeners.split(",")[0].rsplit(":", 1)[1])
        else:
            self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="strom-e2e-"))
        self.args = []
        self.http_port = self.http = None
        if http:
            self.http_port = free_port()
            self.http = f"http://127.0.0.1:{self.http_port}"
            self.args += ["--http-addr", f"127.0.0.1:{self.http_port}"]
        self.grpc_port = self.grpc = None
        if grpc:
            self.grpc_port = free_port()
            self.grpc = f"127.0.0.1:{self.grpc_port}"
            self.args += ["--grpc-addr", self.grpc]
        elif "grpc_addr" not in opts and not any(str(a).startswith("--grpc-addr") for a in extra_args):
            # Brokers of other tests do not race for the default port.
            self.args += ["--grpc-addr", "off"]
        for k, v in opts.items():
            self.args += [f"--{k.replace('_', '-')}", _flag_value(v)]
        self.args += [str(a) for a in extra_args]
        self.env = dict(os.environ)
        self.env.setdefault("RUST_BACKTRACE", "1")
        if env:
            self.env.update({k: str(v) for k, v in env.items()})
        self.proc = None
        self.spawned_at = self.ready_at = None
        self._chunks = []
        self._lock = threading.Lock()
        self._reader = None

    # --- log capture ---------------------------------------------------------------------

    @property
    def log(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def _pump(self, stream):
        for line in iter(stream.readline, b""):
            with self._lock:
                self._chunks.append(line)
        stream.close()

    def _log_tail(self, n=80) -> str:
        return "\n".join(self.log.splitlines()[-n:])

    # --- lifecycle -----------------------------------------------------------------------

    def command(self):
        kafka = [] if self.listeners else ["--kafka-addr", self.bootstrap]
        return [strom_bin(), "serve", "--data-dir", str(self.data_dir), *kafka, *self.args]

    def start(self):
        assert not self.running(), "broker already running"
        cmd = self.command()
        with self._lock:
            self._chunks.append(f"--- $ {' '.join(cmd)}\n".encode())
        self.spawned_at, self.ready_at = time.monotonic(), None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.data_dir)
        self._reader = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self._join_reader()
                pytest.fail(f"strom exited with {self.proc.returncode} before accepting connections:\n"
                            f"{self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.ready_at = time.monotonic()
                    if self.http_port is not None:
                        self._wait_http(deadline)
                    if self.grpc_port is not None:
                        self._wait_port(self.grpc_port, deadline)
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"strom did not accept connections on {self.bootstrap} within "
                            f"{READY_TIMEOUT_S:.0f}s:\n{self._log_tail()}")
            time.sleep(READY_POLL_S)

    def _wait_port(self, port, deadline):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"nothing accepted connections on port {port}:\n{self._log_tail()}")
            time.sleep(READY_POLL_S)

    def _wait_http(self, deadline):
        while True:
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the HTTP door on {self.http} did not answer /healthz:\n{self._log_tail()}")
            time.sleep(READY_POLL_S)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _join_reader(self):
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def stop(self):
        """Graceful stop: SIGTERM, then the exit code must be 0."""
        assert self.running(), "broker is not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"strom did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM:\n{self._log_tail()}")
        self._join_reader()
        assert code == 0, f"strom exited with {code} after SIGTERM:\n{self._log_tail()}"

    def kill(self):
        """Crash: SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._join_reader()

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        self.kill()
        keep = os.environ.get("STROM_E2E_KEEP_LOGS")  # a directory: keep every broker's whole log
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"strom-{self.port}.log").write_text(self.log)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def broker_factory(request):
    brokers = []

    def make(*extra_args, start=True, env=None, http=False, grpc=False, **opts):
        b = Broker(extra_args, env=env, http=http, grpc=grpc, **opts)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    rep = getattr(request.node, "rep_call", None)
    for i, b in enumerate(brokers):
        if rep is not None and rep.failed:
            request.node.add_report_section("teardown", f"strom log (broker {i}, {b.bootstrap})", b._log_tail(200))
        b.cleanup()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
