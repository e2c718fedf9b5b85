"""The web console (issue 18) in Debian's Chromium, driven over the DevTools protocol: the
page is served by the broker binary alone, talks to the HTTP door's public API, and is
checked for what a user sees (overview figures, topics, the message browser with text /
JSON / hex views, the live tail, produce, create and delete, an API error shown with its
message, a phone-width layout, keyboard focus) and for no JavaScript error along the way.
confluent-kafka writes and reads on the Kafka side of the same broker."""

import json
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from cdp import Browser, chromium_path

pytestmark = [pytest.mark.timeout(180)]


def produce(bootstrap, topic, records):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value, headers in records:
        p.produce(topic, value=value, key=key, headers=headers, partition=0)
    assert p.flush(30) == 0


def text(b, selector):
    return b.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")


@pytest.fixture
def browser(tmp_path):
    if chromium_path() is None:
        pytest.skip("chromium is not installed")
    b = Browser(tmp_path / f"chromium-{uuid.uuid4().hex[:6]}")
    yield b
    b.close()


def test_console_pages_in_a_browser(broker_factory, browser):
    b = broker_factory(http=True)
    base = f"{b.http}/console"
    # Served by the binary: any path under /console is the app (deep links); assets by name.
    r = requests.get(f"{base}/topics/whatever?partition=0", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert requests.get(f"{base}/assets/app.js", timeout=10).headers["content-type"].startswith("text/javascript")
    missing = requests.get(f"{base}/assets/nope.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    produce(b.bootstrap, "orders", [(b"k1", b'{"id": 1, "item": "book"}', [("source", b"kafka")]),
                                    (None, b"\x00\x01\xff", None)])
    summary = requests.get(f"{b.http}/broker", timeout=10).json()

    # Overview: the broker's figures and a live throughput reading from /metrics.
    browser.goto(base)
    assert browser.wait("document.getElementById('version')?.innerText") == summary["version"]
    assert text(browser, "#topics") == "1"
    assert text(browser, "#data-dir") == summary["data_dir"]
    assert browser.wait("document.getElementById('rate-in')?.innerText.endsWith('/s')", timeout=15)

    # Keyboard: the first Tab lands on the skip link.
    browser.send("Input.dispatchKeyEvent", type="keyDown", key="Tab", code="Tab", windowsVirtualKeyCode=9)
    browser.send("Input.dispatchKeyEvent", type="keyUp", key="Tab", code="Tab", windowsVirtualKeyCode=9)
    assert browser.eval("document.activeElement.className") == "skip"

    # Topics, by the navigation link (client-side routing).
    browser.eval("document.querySelector('[data-nav=topics]').click()")
    browser.wait("document.querySelector('tr[data-topic=orders]')")
    assert browser.eval("location.pathname") == "/console/topics"
    row = text(browser, "tr[data-topic=orders]").split("\t")
    assert row[:3] == ["orders", "1", "2"], row

    # Create a topic with the form; the app moves to its page.
    browser.eval("""(() => { const f = document.getElementById('create-topic');
        f.elements['name'].value = 'console-made'; f.partitions.value = '2'; f.requestSubmit(); })()""")
    browser.wait("location.pathname === '/console/topics/console-made' && document.querySelectorAll('#partitions tbody tr').length === 2")
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert len(md.topics["console-made"].partitions) == 2
    # A second create of the same name shows the broker's error.
    browser.eval("document.querySelector('[data-nav=topics]').click()")
    browser.wait("document.getElementById('create-topic')")
    browser.eval("""(() => { const f = document.getElementById('create-topic');
        f.elements['name'].value = 'console-made'; f.requestSubmit(); })()""")
    assert "topic_already_exists" in browser.wait("document.querySelector('#main .error')?.innerText")

    # Produce from the browser; confluent-kafka reads it back.
    browser.goto(f"{base}/topics/console-made")
    browser.wait("document.getElementById('produce')")
    browser.eval("""(() => { const f = document.getElementById('produce');
        f.key.value = 'ck'; f.value.value = 'hello from the browser'; f.headers.value = 'h1=v1';
        f.partition.value = '1'; f.requestSubmit(); })()""")
    assert "partition 1 at offset 0" in browser.wait("document.getElementById('produced')?.innerText")
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "console-check", "auto.offset.reset": "earliest"})
    c.subscribe(["console-made"])
    try:
        m = None
        for _ in range(30):
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                break
        assert (m.key(), m.value(), m.headers(), m.partition()) == (b"ck", b"hello from the browser", [("h1", b"v1")], 1)
    finally:
        c.close()

    # A deep link into the message browser, JSON view: pretty JSON, headers, null key.
    browser.goto(f"{base}/topics/orders?partition=0&offset=0&view=json")
    browser.wait("document.querySelectorAll('#records tbody tr').length === 2")
    assert text(browser, "#records tr[data-offset='0'] td.value") == '{\n  "id": 1,\n  "item": "book"\n}'
    assert text(browser, "#records tr[data-offset='0'] td.headers") == "source: kafka"
    assert text(browser, "#records tr[data-offset='0'] td.key") == "k1"
    assert text(browser, "#records tr[data-offset='1'] td.key") == "null"
    # Hex view of the binary record.
    browser.eval("""(() => { const f = document.getElementById('browse'); f.mode.value = 'hex'; f.requestSubmit(); })()""")
    browser.wait("document.querySelector(\"#records tr[data-offset='1'] td.value\")?.innerText === '00 01 ff'")
    assert browser.eval("location.search") == "?partition=0&offset=0&view=hex"

    # Live tail over SSE.
    browser.eval("document.getElementById('tail-toggle').click()")
    browser.wait("document.getElementById('tail-status').innerText === 'live'")
    produce(b.bootstrap, "orders", [(b"t", b"tailed <b>not html</b>", None)])
    browser.wait("document.querySelector('#tail tbody td.value')?.innerText === 'tailed <b>not html</b>'")
    assert browser.eval("document.querySelector('#tail b')") is None  # data is text, never markup

    # An API error is shown with its message.
    browser.goto(f"{base}/topics/nope")
    assert "unknown_topic_or_partition" in browser.wait("document.querySelector('#main .error')?.innerText")
    browser.goto(f"{base}/no/such/page")
    assert browser.wait("document.querySelector('h1')?.innerText") == "Not found"

    # Delete from the topic page.
    browser.goto(f"{base}/topics/console-made")
    browser.wait("document.getElementById('delete-topic')")
    browser.eval("window.confirm = () => true; document.getElementById('delete-topic').click()")
    browser.wait("location.pathname === '/console/topics' && document.querySelector('tr[data-topic=orders]')")
    assert browser.eval("document.querySelector('tr[data-topic=\"console-made\"]')") is None
    assert "console-made" not in AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).topics

    # Phone width: nothing wider than the screen.
    browser.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
    browser.goto(f"{base}/topics/orders")
    browser.wait("document.querySelectorAll('#records tbody tr').length === 3")
    assert browser.eval("document.documentElement.scrollWidth <= window.innerWidth"), \
        browser.eval("[document.documentElement.scrollWidth, window.innerWidth]")

    assert browser.errors == []
