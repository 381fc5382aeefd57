"""MQTT retained messages (issue 12): durable through restarts and kill -9,
delivered at min(message QoS, granted QoS), topic matching with `$` topics,
expiry, the management API and warrenctl, and flow control of long matches."""
import json
import os
import queue
import subprocess
import time
import urllib.parse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import CTL


class Client:
    """A paho client recording SUBACKs and messages, in arrival order, in one queue."""

    def __init__(self, broker, client_id, v5=False, receive_max=None, user=None):
        self.v5 = v5
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        self.events = queue.Queue()
        connected = queue.Queue()
        self.c.on_message = lambda c, u, m: self.events.put(("msg", m))
        self.c.on_subscribe = lambda c, u, mid, codes, p=None: self.events.put(("suback", codes))
        self.c.on_connect = lambda c, u, f, rc, p=None: connected.put(rc)
        self.c.username_pw_set(user or "guest", "guest")
        props = None
        if v5 and receive_max:
            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = receive_max
        if v5:
            self.c.connect("127.0.0.1", broker.mqtt_port, 30, properties=props)
        else:
            self.c.connect("127.0.0.1", broker.mqtt_port, 30)
        self.c.loop_start()
        assert not connected.get(timeout=10).is_failure

    def pub(self, topic, payload, qos=1, retain=True, expiry=None):
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(10)
        assert info.is_published()

    def sub(self, topic, qos=1):
        if self.v5:
            self.c.subscribe(topic, options=SubscribeOptions(qos=qos))
        else:
            self.c.subscribe(topic, qos)
        kind, codes = self.events.get(timeout=10)
        assert kind == "suback", "SUBACK comes before the retained messages"
        return codes

    def get(self, timeout=10):
        kind, m = self.events.get(timeout=timeout)
        assert kind == "msg"
        return m

    def none(self, wait=0.3):
        with pytest.raises(queue.Empty):
            self.events.get(timeout=wait)

    def retained(self, topic, n, qos=2):
        """Subscribe and take n messages; then nothing more comes."""
        self.sub(topic, qos)
        got = [self.get() for _ in range(n)]
        self.none()
        return got

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def ctl(b, *args):
    env = dict(os.environ, WARRENCTL_URL=f"http://127.0.0.1:{b.http_port}")
    r = subprocess.run([CTL, *args], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def q(s):
    return urllib.parse.quote(s, safe="")


def test_retained_survive_a_clean_restart(broker):
    p = Client(broker, "keep-pub")
    for qos in (0, 1, 2):
        p.pub(f"keep/q{qos}", f"v{qos}".encode(), qos=qos)
    p.pub("keep/q1", b"v1-new", qos=1)  # replaces
    p.close()
    broker.restart()
    s = Client(broker, "keep-sub")
    got = sorted((m.topic, m.payload, m.qos, m.retain) for m in s.retained("keep/#", 3))
    assert got == [
        ("keep/q0", b"v0", 0, True),
        ("keep/q1", b"v1-new", 1, True),
        ("keep/q2", b"v2", 2, True),
    ]
    s.close()


def test_retained_survives_kill9_after_puback(broker):
    p = Client(broker, "kill-pub")
    p.pub("crash/a", b"durable", qos=1)  # returns once PUBACK came
    broker.kill9()
    broker.start()
    s = Client(broker, "kill-sub")
    [m] = s.retained("crash/a", 1)
    assert (m.payload, m.qos, m.retain) == (b"durable", 1, True)
    s.close()


def test_empty_payload_clears_and_stays_cleared(broker):
    p = Client(broker, "clear-pub")
    p.pub("clear/a", b"x", qos=1)
    p.pub("clear/b", b"y", qos=1)
    p.pub("clear/a", b"", qos=1)  # PUBACK after the removal is on disk
    broker.kill9()
    broker.start()
    s = Client(broker, "clear-sub")
    [m] = s.retained("clear/#", 1)
    assert m.topic == "clear/b"
    s.close()
    broker.restart()
    s = Client(broker, "clear-sub2")
    assert [m.topic for m in s.retained("clear/#", 1)] == ["clear/b"]
    s.close()


@pytest.mark.parametrize("v5", [False, True])
def test_qos_is_min_of_message_and_granted(broker, v5):
    p = Client(broker, f"qos-pub-{v5}")
    for qos in (0, 1, 2):
        p.pub(f"qos{v5}/m{qos}", b"m", qos=qos)
    for granted in (0, 1, 2):
        s = Client(broker, f"qos-sub-{v5}-{granted}", v5=v5)
        got = sorted((m.topic, m.qos, m.retain) for m in s.retained(f"qos{v5}/+", 3, qos=granted))
        assert got == [(f"qos{v5}/m{q_}", min(q_, granted), True) for q_ in (0, 1, 2)]
        s.close()
    p.close()


def test_dollar_topics_and_wildcards(broker):
    p = Client(broker, "dollar-pub")
    for t in ("$SYS/upq", "$app/xq", "dz/bq", "dz/xq"):
        p.pub(t, t.encode())
    s = Client(broker, "dollar-sub")
    # MQTT-4.7.2-1: no `$` topic for filters starting with a wildcard.
    topics = sorted(m.payload.decode() for m in drain_all(s, "#"))
    assert "$SYS/upq" not in topics and "$app/xq" not in topics
    assert {"dz/bq", "dz/xq"} <= set(topics)
    assert [m.topic for m in s.retained("+/bq", 1)] == ["dz/bq"]
    s.sub("+/upq")
    s.none()
    assert [m.topic for m in s.retained("$SYS/#", 1)] == ["$SYS/upq"]
    assert [m.topic for m in s.retained("$app/+", 1)] == ["$app/xq"]
    s.close()
    p.close()


def drain_all(s, topic, wait=0.5):
    """Subscribe and collect messages until none comes for `wait` seconds."""
    s.sub(topic)
    out = []
    while True:
        try:
            kind, m = s.events.get(timeout=wait)
        except queue.Empty:
            return out
        assert kind == "msg"
        out.append(m)


def test_new_subscription_gets_only_matching(broker):
    p = Client(broker, "match-pub")
    for t in ("mt/1", "mt/2", "mt/x/1", "mt", "nt/1"):
        p.pub(t, t.encode())
    s = Client(broker, "match-sub")
    assert sorted(m.topic for m in s.retained("mt/+", 2)) == ["mt/1", "mt/2"]
    # `#` matches the parent level too.
    assert sorted(m.topic for m in s.retained("mt/#", 4)) == ["mt", "mt/1", "mt/2", "mt/x/1"]
    assert [m.topic for m in s.retained("mt/x/1", 1)] == ["mt/x/1"]
    s.close()
    p.close()


def expiry_of(m):
    return getattr(m.properties, "MessageExpiryInterval", None)


def test_expiry(broker):
    p = Client(broker, "exp-pub", v5=True)
    p.pub("exp/short", b"s", qos=1, expiry=1)
    p.pub("exp/long", b"l", qos=1, expiry=30)
    p.pub("exp/never", b"n", qos=1)
    t0 = time.monotonic()
    s = Client(broker, "exp-sub", v5=True)
    [m] = s.retained("exp/long", 1)
    assert expiry_of(m) in (29, 30)
    [m] = s.retained("exp/never", 1)
    assert expiry_of(m) is None
    # Expiry is about time passing: wait it out.
    time.sleep(max(0.0, 1.6 - (time.monotonic() - t0)))
    got = {m.topic: expiry_of(m) for m in s.retained("exp/#", 2)}
    assert set(got) == {"exp/long", "exp/never"}
    assert got["exp/long"] <= 29, "the interval sent is what is left"
    status, items = broker.api("/api/mqtt/retained/%2F")
    assert status == 200
    assert "exp/short" not in {i["topic"] for i in items}
    [item] = [i for i in items if i["topic"] == "exp/long"]
    assert 0 < item["expires_in"] < 29
    s.close()
    p.close()
    broker.restart()
    s = Client(broker, "exp-sub2", v5=True)
    [m] = s.retained("exp/long", 1)
    # The deadline was stored: the time left did not start again.
    assert expiry_of(m) <= 29
    s.close()


def test_list_and_delete_over_http_and_warrenctl(broker):
    p = Client(broker, "ops-pub")
    # QoS 0 first: the PUBACK of the QoS 1 one after it says both are in.
    p.pub("ops/b c", b"x" * 100, qos=0)
    p.pub("ops/a", b"alpha", qos=1)
    status, items = broker.api("/api/mqtt/retained?vhost=%2F")
    assert status == 200
    by = {i["topic"]: i for i in items}
    assert by["ops/a"]["vhost"] == "/"
    assert (by["ops/a"]["qos"], by["ops/a"]["payload_bytes"], by["ops/a"]["payload"]) == (1, 5, "alpha")
    assert by["ops/b c"]["payload_truncated"] and by["ops/b c"]["expires_in"] is None
    status, page = broker.api("/api/mqtt/retained/%2F?page=1&page_size=1")
    assert status == 200 and page["item_count"] == 1 and page["total_count"] >= 2
    assert page["page_count"] == page["total_count"]
    assert broker.api("/api/mqtt/retained/%2F?page=1&page_size=100000")[0] == 400
    assert broker.api("/api/mqtt/retained/nope")[0] == 404
    # Same auth rules as the other endpoints.
    assert broker.api("/api/mqtt/retained", password="wrong")[0] == 401
    status, _ = broker.api(f"/api/mqtt/retained/%2F/{q('ops/a')}", method="DELETE")
    assert status == 204
    assert broker.api(f"/api/mqtt/retained/%2F/{q('ops/a')}", method="DELETE")[0] == 404
    s = Client(broker, "ops-sub")
    assert [m.topic for m in s.retained("ops/#", 1)] == ["ops/b c"]
    listed = json.loads(ctl(broker, "list_retained", "--format", "json"))
    assert "ops/b c" in {i["topic"] for i in listed}
    assert "ops/b c" in ctl(broker, "list_retained")
    ctl(broker, "delete_retained", "ops/b c")
    listed = json.loads(ctl(broker, "list_retained", "--format", "json"))
    assert not {i["topic"] for i in listed} & {"ops/a", "ops/b c"}
    s.sub("ops/#")
    s.none()
    s.close()
    p.close()


def test_user_without_tags_may_not_list(broker):
    assert broker.api("/api/users/plain", method="PUT", body={"password": "pw", "tags": ""})[0] in (201, 204)
    assert broker.api("/api/mqtt/retained", user="plain", password="pw")[0] == 403
    assert broker.api(f"/api/mqtt/retained/%2F/{q('x')}", user="plain", password="pw",
                      method="DELETE")[0] == 403


def test_deleting_a_vhost_drops_its_retained(broker):
    assert broker.api("/api/vhosts/rv", method="PUT")[0] in (201, 204)
    perm = {"configure": ".*", "write": ".*", "read": ".*"}
    assert broker.api("/api/permissions/rv/guest", method="PUT", body=perm)[0] in (201, 204)
    p = Client(broker, "rv-pub", user="rv:guest")
    p.pub("rv/t", b"in rv", qos=1)
    p.close()
    status, items = broker.api("/api/mqtt/retained/rv")
    assert status == 200 and [i["topic"] for i in items] == ["rv/t"]
    assert broker.api("/api/vhosts/rv", method="DELETE")[0] == 204
    assert broker.api("/api/vhosts/rv", method="PUT")[0] in (201, 204)
    assert broker.api("/api/permissions/rv/guest", method="PUT", body=perm)[0] in (201, 204)
    broker.restart()
    assert broker.api("/api/mqtt/retained/rv") == (200, [])
    # The pseudo-queue holding retained messages is no queue.
    status, queues = broker.api("/api/queues")
    assert status == 200 and not [x for x in queues if x["name"].startswith("amq.")]


def test_long_match_streams_within_receive_maximum(broker):
    n = 3000
    p = Client(broker, "bulk-pub")
    for i in range(n - 1):
        p.c.publish(f"bulk/{i // 100}/{i}", b"p" * 200, qos=1, retain=True)
    p.pub(f"bulk/{(n - 1) // 100}/{n - 1}", b"p" * 200, qos=1)  # after all the others
    # A slow reader with a receive maximum of 5: every one still comes, at
    # QoS 1, while no more than 5 are unacknowledged (paho acks each).
    s = Client(broker, "bulk-sub", v5=True, receive_max=5)
    s.sub("bulk/#", qos=1)
    seen = set()
    for _ in range(n):
        m = s.get(timeout=20)
        assert (m.qos, m.retain) == (1, True)
        seen.add(m.topic)
    assert len(seen) == n
    s.none()
    # The connection kept reading packets while it streamed.
    s.pub("bulk/done", b"", qos=1)
    s.close()
    p.close()
