"""A real browser client: headless Chromium loads tests/browser/mqtt_page.html, whose
MQTT.js (npm `mqtt`, dist/mqtt.min.js; installed by tests/run.sh) subscribes and
publishes over ws://127.0.0.1:<port>/ws. The page reports each event to this test's
HTTP server; pika checks both directions through amq.topic."""
import json
import queue
import shutil
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

PAGE_DIR = Path(__file__).resolve().parents[1] / "browser"
BUNDLE = PAGE_DIR / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Every wait below is bounded by this.
TIMEOUT = 30


class PageServer:
    """Serves tests/browser/ on a free loopback port; POST /report lands in `events`."""

    def __init__(self):
        events = self.events = queue.Queue()

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(PAGE_DIR), **kw)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                events.put(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, event, deadline):
        """The next report named `event`; fails on an error report or at the deadline."""
        seen = []
        while True:
            left = deadline - time.time()
            if left <= 0:
                pytest.fail(f"no '{event}' from the page within {TIMEOUT} s; saw {seen}")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(e)
            assert e["event"] != "error", e
            if e["event"] == event:
                return e

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def page_server():
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} missing: run tests/run.sh (npm ci in tests/browser)")
    s = PageServer()
    yield s
    s.close()


def chromium(url, profile):
    """Headless Chromium on `url`, until the test ends it."""
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_mqtt_js_in_chromium_talks_to_amqp(broker, page_server, tmp_path, version):
    ch = broker.connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", f"browser.v{version}.out")
    params = {"port": broker.ws_port, "version": version, "id": f"chromium-v{version}",
              "sub": f"browser/v{version}/in", "pub": f"browser/v{version}/out"}
    url = f"http://127.0.0.1:{page_server.port}/mqtt_page.html?{urlencode(params)}"
    browser = chromium(url, tmp_path / "profile")
    try:
        deadline = time.time() + TIMEOUT
        assert page_server.wait("subscribed", deadline)["granted"] == [1]
        # The browser's QoS 1 publish reaches the AMQP queue.
        got = None
        for method, props, body in ch.consume(q, auto_ack=True, inactivity_timeout=TIMEOUT):
            got = (method.routing_key, body) if method else None
            break
        ch.cancel()
        assert got == (f"browser.v{version}.out", b"hello from chromium")
        page_server.wait("published", deadline)
        # An AMQP publish reaches the page's subscription.
        ch.basic_publish("amq.topic", f"browser.v{version}.in", b"hello from pika")
        m = page_server.wait("message", deadline)
        assert (m["topic"], m["payload"]) == (f"browser/v{version}/in", "hello from pika")
        # The broker lists it as a Web MQTT connection.
        want = "Web MQTT 5.0" if version == 5 else "Web MQTT 3.1.1"
        conns = broker.api("/api/connections")[1]
        assert want in [c["protocol"] for c in conns], conns
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
