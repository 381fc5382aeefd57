"""Start a real Warren process on an ephemeral port for each test module."""
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("WARREN_BIN", str(ROOT / "target" / "debug" / "warren"))
CTL = os.environ.get("WARRENCTL_BIN", str(ROOT / "target" / "debug" / "warrenctl"))

# The TLS listeners' "bound on" lines, by the attribute that takes the port.
# They start only when WARREN_TLS__CERT_FILE is set (see test_tls.py).
TLS_PORTS = {
    "amqps_port": r"AMQP TLS listener bound on [\d.]+:(\d+)",
    "mqtts_port": r"MQTT TLS listener bound on [\d.]+:(\d+)",
    "wss_port": r"MQTT WebSocket TLS listener bound on [\d.]+:(\d+)",
    "https_port": r"HTTP TLS listener bound on [\d.]+:(\d+)",
}


class Broker:
    # Where the listeners are reached, and what runs the binary (a network
    # namespace's `ip netns exec NS` for cluster partition tests).
    host = "127.0.0.1"
    cmd_prefix = ()

    def __init__(self, tmp_path, extra_env=None, host=None, cmd_prefix=None):
        self.tmp_path = tmp_path
        self.extra_env = extra_env
        if host:
            self.host = host
        if cmd_prefix:
            self.cmd_prefix = tuple(cmd_prefix)
        self.start()

    def start(self):
        tmp_path, extra_env = self.tmp_path, self.extra_env
        env = dict(os.environ)
        env.update(
            {
                "WARREN_AMQP__BIND": "127.0.0.1:0",
                "WARREN_MQTT__BIND": "127.0.0.1:0",
                # A free port, not Web MQTT's 15675: brokers run side by side.
                "WARREN_MQTT__WS_BIND": "127.0.0.1:0",
                "WARREN_HTTP__BIND": "127.0.0.1:0",
                # TLS listeners (only with a certificate): free ports too.
                "WARREN_AMQP__TLS_BIND": "127.0.0.1:0",
                "WARREN_MQTT__TLS_BIND": "127.0.0.1:0",
                "WARREN_MQTT__WSS_BIND": "127.0.0.1:0",
                "WARREN_HTTP__TLS_BIND": "127.0.0.1:0",
                "WARREN_STORE__DIR": str(tmp_path / "data"),
                "RUST_LOG": env.get("RUST_LOG", "info"),
            }
        )
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [*self.cmd_prefix, BIN], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines = []
        self.amqp_port = None
        self.http_port = None
        self.mqtt_port = None
        self.ws_port = None
        self.ws_enabled = env["WARREN_MQTT__WS_BIND"] != ""
        self.tls_enabled = env.get("WARREN_TLS__CERT_FILE", "") != ""
        for attr in TLS_PORTS:
            setattr(self, attr, None)
        bound = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"MQTT listener bound on [\d.]+:(\d+)", line)
                if m:
                    self.mqtt_port = int(m.group(1))
                m = re.search(r"MQTT WebSocket listener bound on [\d.]+:(\d+)", line)
                if m:
                    self.ws_port = int(m.group(1))
                m = re.search(r"HTTP listener bound on [\d.]+:(\d+)", line)
                if m:
                    self.http_port = int(m.group(1))
                for attr, pattern in TLS_PORTS.items():
                    m = re.search(pattern, line)
                    if m:
                        setattr(self, attr, int(m.group(1)))
                m = re.search(r"AMQP listener bound on [\d.]+:(\d+)", line)
                if m:
                    self.amqp_port = int(m.group(1))
                    bound.set()

        threading.Thread(target=pump, daemon=True).start()
        if not bound.wait(30) or not self._wait_ports():
            self.stop()
            raise RuntimeError("broker did not start:\n" + "".join(self.lines))

    def api(self, path, user="guest", password="guest", method="GET", body=None):
        """Call a management API path (JSON body if given); returns (status, parsed JSON)."""
        import base64
        import json
        import urllib.error
        import urllib.request
        # The HTTP line is logged after the AMQP one; wait for it.
        deadline = time.time() + 10
        while getattr(self, "http_port", None) is None and time.time() < deadline:
            time.sleep(0.02)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.host}:{self.http_port}{path}", method=method, data=data
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                return r.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"null")
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def text(self, path):
        """GET a path without credentials; returns (status, body text)."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def params(self, **kw):
        return pika.ConnectionParameters(self.host, self.amqp_port, **kw)

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))

    def log(self):
        return "".join(self.lines)

    def wait_log(self, text, timeout=5):
        """True once `text` appears in the broker's log (read asynchronously)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return True
            time.sleep(0.02)
        return False

    def _wait_ports(self):
        deadline = time.time() + 10
        def missing():
            ws = self.ws_enabled and self.ws_port is None
            tls = self.tls_enabled and any(getattr(self, a) is None for a in TLS_PORTS)
            return self.http_port is None or self.mqtt_port is None or ws or tls
        while missing() and time.time() < deadline:
            time.sleep(0.01)
        return not missing()

    def restart(self):
        self.stop()
        self.start()

    def kill9(self):
        self.proc.kill()  # SIGKILL
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("warren"))
    yield b
    b.stop()


@pytest.fixture
def conn(broker):
    c = broker.connect()
    yield c
    if c.is_open:
        c.close()


def drain(ch, queue, n, timeout=10):
    """Consume exactly n messages (auto-ack) or fail after timeout."""
    out = []
    deadline = time.time() + timeout
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=1):
        if method is not None:
            out.append(body)
        if len(out) == n or time.time() > deadline:
            break
    ch.cancel()
    return out


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])
