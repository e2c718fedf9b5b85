"""Finds which of the mutated frames of tests/e2e/test_mutated_requests.py stop the broker.

Sends the test's mutated frames (same seed, same order) to a real `strom serve` in groups, each
frame on its own connection; when the broker dies, it is restarted and the group is bisected
down to the single frames that kill it. Prints one line per killer (frame number, seed file,
mutations, what the broker said: the failed allocation or the panic) and a summary by api.

Usage: python fuzz/capture/triage.py --strom target/debug/strom [--frames 20000] [--out DIR]
(--out writes each killer frame, without its length prefix, to DIR for a regression corpus.)
"""

import argparse
import collections
import os
import signal
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

import capture  # noqa: E402
import test_mutated_requests as mutated  # noqa: E402

GROUP = 50
# How long a frame gets to kill the broker before it is taken as harmless.
SETTLE_S = 0.1


class Target:
    def __init__(self, strom):
        self.strom = strom
        self.broker = None
        self.start()

    def start(self):
        port = capture.free_port()
        self.broker = capture.Broker(self.strom, port, port)
        self.addr = ("127.0.0.1", port)

    def restart(self):
        self.broker.stop()
        said = self.broker.log_path.read_text(errors="replace")
        self.broker.cleanup()
        self.start()
        return said

    def alive_after(self, frames) -> bool:
        log_from = self.broker.log_path.stat().st_size
        socks = []
        for data in frames:
            try:
                s = socket.create_connection(self.addr, timeout=2)
            except OSError as e:
                if self.broker.proc.poll() is None:
                    raise SystemExit(f"cannot connect to a running broker: {e}")
                break
            socks.append(s)
            try:
                s.sendall(data)
            except OSError:
                pass  # the broker closed this connection already
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and self.broker.proc.poll() is None:
            time.sleep(0.02)
        for s in socks:
            s.close()
        # An abort prints its message at once, then (with RUST_BACKTRACE) a slow backtrace.
        with open(self.broker.log_path, "rb") as f:
            f.seek(log_from)
            if b"memory allocation of" in f.read():
                self.broker.proc.wait(timeout=30)
        return self.broker.proc.poll() is None


def words(log: str) -> str:
    for line in log.splitlines():
        if "memory allocation" in line or "panicked" in line:
            return line.strip()[:160]
    return "(no abort message)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strom", default=str(HERE.parents[1] / "target/debug/strom"))
    ap.add_argument("--frames", type=int, default=mutated.FRAMES)
    ap.add_argument("--start", type=int, default=0, help="first frame number (to resume)")
    ap.add_argument("--out")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up the broker on SIGTERM
    os.environ["RUST_BACKTRACE"] = "0"  # an abort is then immediate (a backtrace takes 0.3 s+)
    frames = list(mutated.mutated_frames(mutated.load_seeds(), args.frames))
    target = Target(args.strom)
    killers = []
    done = args.start

    def bisect(items):
        if target.alive_after([d for _, _, _, d in items]):
            return
        said = target.restart()
        if len(items) == 1:
            killers.append((*items[0], words(said)))
            k, name, muts, _ = items[0]
            print(f"#{k} {name} {'+'.join(muts)}: {words(said)}", flush=True)
            return
        mid = len(items) // 2
        bisect(items[:mid])
        bisect(items[mid:])

    try:
        indexed = [(k, name, muts, data) for k, (name, muts, data) in enumerate(frames)]
        for g in range(args.start, len(indexed), GROUP):
            bisect(indexed[g:g + GROUP])
            done = min(g + GROUP, len(indexed))
    except KeyboardInterrupt:
        print(f"interrupted after frame {done}", flush=True)
    finally:
        target.broker.stop()
        target.broker.cleanup()
    # Seed names are <client>-<Api>-v<version>-<sha>.bin.
    by_api = collections.Counter("-".join(name.rsplit("-", 1)[0].split("-")[-2:])
                                 for _, name, _, _, _ in killers)
    print(f"{len(killers)} of frames {args.start}..{done} stop the broker; "
          f"by seed api: {dict(by_api.most_common())}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for k, name, _, data, _ in killers:
            (out / f"mutated-{k}-{name}").write_bytes(data[4:])


if __name__ == "__main__":
    main()
