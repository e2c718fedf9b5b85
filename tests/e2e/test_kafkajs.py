"""kafkajs (Node.js, old non-flexible protocol versions) against `strom serve`: admin, keyed
produce with headers, a consumer group, committed offsets, group admin, configs."""

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"
pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").is_dir(),
                                 reason="node or kafkajs missing (scripts/setup installs kafkajs)")]


def test_kafkajs_round_trip(broker):
    p = subprocess.run(["node", str(JS / "kafkajs_roundtrip.js"), broker.bootstrap],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["created"] is True and "kjs" in out["topics"]
    assert all(err == 0 for _, err in out["produced"])
    got = out["consumed"]
    assert sorted(v for _, _, v, _ in got) == sorted(f"v{i}" for i in range(300))
    assert all(h == "x" + v[1:] for _, _, v, h in got), "headers round-trip"
    key_partition = {}
    for part, key, _, _ in got:
        assert key_partition.setdefault(key, part) == part, "a key moved partition"
    per_partition = Counter(part for part, _, _, _ in got)
    assert sorted(out["committed"]) == sorted([p, per_partition.get(p, 0)] for p in range(3))
    assert "kjs-g" in out["groups"] and out["state"] == "Empty"
    assert out["retention"] == "604800000"
    assert "kjs" not in out["after_delete"]
