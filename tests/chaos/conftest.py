"""Fixtures of the chaos suite: the e2e suite's brokers (`broker_factory`, `broker`, from
tests/e2e/conftest.py, loaded as a module of its own), a scratch directory per test and
`chaos_report`, where a test files what it measured (restart times, records checked).

At the end of the run the reports are printed (restart times p50/p99/max per test and overall);
with CHAOS_REPORT=<path> they are also written there as JSON.
"""

import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_spec = importlib.util.spec_from_file_location("strom_e2e_conftest", HERE.parent / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

# Re-exported: pytest collects fixtures and hooks from this module's namespace.
broker_factory = e2e.broker_factory
broker = e2e.broker
pytest_runtest_makereport = e2e.pytest_runtest_makereport

import chaos  # noqa: E402

REPORTS = []


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="strom-chaos-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def chaos_report(request):
    """A dict the test fills (`cycles` = a chaos.Cycles, `check` = a chaos.Check, anything
    else JSON-able); filed for the summary even when the test fails."""
    rep = {}
    yield rep
    entry = {"test": request.node.nodeid.split("::", 1)[-1]}
    call = getattr(request.node, "rep_call", None)
    entry["outcome"] = call.outcome if call is not None else "error"
    for k, v in rep.items():
        if isinstance(v, chaos.Cycles):
            entry.update(v.report())
            entry["_ready"], entry["_first"], entry["_load"] = v.ready_s, v.first_ack_s, v.load_resumed_s
        elif isinstance(v, chaos.Check):
            entry["records"] = v.counts()
        else:
            entry[k] = v
    REPORTS.append(entry)


def _per_cycle(r):
    """A report entry for the JSON file: the summaries plus every cycle's times in ms."""
    out = {k: v for k, v in r.items() if not k.startswith("_")}
    for key, name in (("_ready", "ready_ms"), ("_first", "first_produce_ms"), ("_load", "load_resumed_ms")):
        if r.get(key):
            out[name] = [chaos.ms(x) for x in r[key]]
    return out


def _line(name, s):
    if not s or not s["n"]:
        return f"{name}: -"
    return f"{name} p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms"


def pytest_terminal_summary(terminalreporter):
    if not REPORTS:
        return
    tr = terminalreporter
    tr.section("chaos: restart times from spawn: to accepting connections (ready), to a fresh client's "
               "first acknowledged produce, to the load's first acknowledgement after the restart")
    all_ready, all_first, all_load = [], [], []
    for r in REPORTS:
        all_ready += r.get("_ready", [])
        all_first += r.get("_first", [])
        all_load += r.get("_load", [])
        rec = r.get("records")
        recs = (f"; {rec['acked']} acked, {rec['lost']} lost, {rec['duplicated']} duplicated, "
                f"{rec['reordered']} reordered" if rec else "")
        cyc = f"{r['cycles']} cycles: " if "cycles" in r else ""
        tr.write_line(f"{r['test']} [{r['outcome']}] {cyc}{_line('ready', r.get('ready'))}; "
                      f"{_line('first produce', r.get('first_produce'))}; "
                      f"{_line('load resumed', r.get('load_resumed'))}{recs}")
    total = {"ready": chaos.summary(all_ready), "first_produce": chaos.summary(all_first),
             "load_resumed": chaos.summary(all_load), "cycles": len(all_ready)}
    for k in ("acked", "stored", "lost", "moved", "duplicated", "reordered", "foreign", "holes"):
        total[k] = sum(r["records"][k] for r in REPORTS if r.get("records"))
    tr.write_line(f"all: {total['cycles']} restarts: {_line('ready', total['ready'])}; "
                  f"{_line('first produce', total['first_produce'])}; "
                  f"{_line('load resumed', total['load_resumed'])}; {total['acked']} acked, "
                  f"{total['lost']} lost, {total['duplicated']} duplicated, {total['reordered']} reordered")
    path = os.environ.get("CHAOS_REPORT")
    if path:
        doc = {"cycles_per_test": chaos.CYCLES, "machine": {"cpus": os.cpu_count(),
                                                            "platform": platform.platform()},
               "strom_bin": os.environ.get("STROM_BIN"), "total": total,
               "tests": [_per_cycle(r) for r in REPORTS]}
        Path(path).write_text(json.dumps(doc, indent=2) + "\n")
        tr.write_line(f"chaos report written to {path}")
