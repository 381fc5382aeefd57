"""Exchange-type plugins: built as cdylibs (Rust) and with cc (C), loaded by a
real broker from its plugin directory, driven with pika."""
import shutil
import subprocess
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import ROOT, Broker, drain

TARGET = ROOT / "target" / "debug"
C_SRC = ROOT / "plugins" / "c-example" / "prefix.c"
INCLUDE = ROOT / "crates" / "warren-plugin" / "include"
RUST_PLUGINS = ["consistent_hash", "random", "body_size", "testing"]


def cc(out, *defines):
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-I{INCLUDE}", *defines, str(C_SRC), "-o", str(out)],
                   check=True)


def make_plugin_dir(d, broken=True):
    d.mkdir(parents=True, exist_ok=True)
    for p in RUST_PLUGINS:
        shutil.copy(TARGET / f"libwarren_plugin_{p}.so", d)
    cc(d / "libwarren_c_prefix.so")
    if broken:
        (d / "libjunk.so").write_bytes(b"this is not an ELF file")
        cc(d / "libno_entry.so", "-DWARREN_TEST_NO_ENTRY")
        cc(d / "libwrong_abi.so", "-DWARREN_TEST_ABI=999")
        cc(d / "libclash.so", '-DWARREN_TEST_TYPE="direct"')
    return d


@pytest.fixture(scope="module")
def pbroker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    plugins = make_plugin_dir(tmp / "plugins")
    b = Broker(tmp, {"WARREN_PLUGINS__DIR": str(plugins)})
    yield b
    b.stop()


def test_loader_logs_plugins_and_errors_but_serves(pbroker):
    assert pbroker.wait_log("loaded plugin 'consistent-hash'")
    assert pbroker.wait_log("exchange types x-consistent-hash")
    assert pbroker.wait_log("loaded plugin 'c-prefix'")
    assert pbroker.wait_log("libjunk.so: not a loadable library")
    assert pbroker.wait_log("libno_entry.so: no `warren_plugin_entry` symbol")
    assert pbroker.wait_log("libwrong_abi.so: ABI version 999, but this broker speaks version 1")
    assert pbroker.wait_log("exchange type 'direct' clashes with a built-in")
    ch = pbroker.connect().channel()
    ch.queue_declare("plain")
    ch.basic_publish("", "plain", b"fine")
    assert ch.basic_get("plain", auto_ack=True)[2] == b"fine"
    # The clashing type did not replace the built-in direct exchange.
    ch.exchange_declare("still-direct", "direct")
    ch.queue_bind("plain", "still-direct", "k")
    ch.basic_publish("still-direct", "k", b"direct works")
    assert ch.basic_get("plain", auto_ack=True)[2] == b"direct works"


def test_consistent_hash_weights_and_stickiness(pbroker):
    c = pbroker.connect()
    ch = c.channel()
    ch.exchange_declare("jobs", "x-consistent-hash")
    weights = {"ch-q1": 1, "ch-q2": 1, "ch-q3": 2, "ch-q4": 4}
    for q, w in weights.items():
        ch.queue_declare(q)
        ch.queue_bind(q, "jobs", str(w))
    n = 100_000
    for i in range(n):
        ch.basic_publish("jobs", str(i), b"")
    ch.confirm_delivery()  # a round trip: everything before it is routed
    total_w = sum(weights.values())
    for q, w in weights.items():
        got = ch.queue_declare(q, passive=True).method.message_count
        want = n * w / total_w
        assert abs(got - want) / want < 0.05, (q, got, want)
    for q in weights:
        ch.queue_purge(q)
    for _ in range(20):
        ch.basic_publish("jobs", "always-the-same", b"")
    counts = [ch.queue_declare(q, passive=True).method.message_count for q in weights]
    assert sorted(counts) == [0, 0, 0, 20]
    # Hashing on a header chosen by an exchange argument.
    ch.exchange_declare("jobs-by-user", "x-consistent-hash", arguments={"hash-header": "user"})
    for q in weights:
        ch.queue_purge(q)
        ch.queue_bind(q, "jobs-by-user", "1")
    for i in range(30):
        ch.basic_publish("jobs-by-user", str(i), b"", pika.BasicProperties(headers={"user": "alice"}))
    counts = [ch.queue_declare(q, passive=True).method.message_count for q in weights]
    assert sorted(counts) == [0, 0, 0, 30]
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind("ch-q1", "jobs", "not-a-weight")
    assert e.value.reply_code == 406


def test_random_body_size_and_c_plugin(pbroker):
    ch = pbroker.connect().channel()
    ch.exchange_declare("spread", "x-random")
    for i in range(4):
        ch.queue_declare(f"rnd-{i}")
        ch.queue_bind(f"rnd-{i}", "spread", "")
    for i in range(4000):
        ch.basic_publish("spread", "", b"x")
    ch.confirm_delivery()
    counts = [ch.queue_declare(f"rnd-{i}", passive=True).method.message_count for i in range(4)]
    assert sum(counts) == 4000 and min(counts) > 800, counts

    ch.exchange_declare("by-size", "x-body-size")
    ch.queue_declare("small")
    ch.queue_declare("large")
    ch.queue_bind("small", "by-size", "-100")
    ch.queue_bind("large", "by-size", "101-")
    ch.basic_publish("by-size", "", b"tiny")
    ch.basic_publish("by-size", "", b"y" * 5000)
    assert ch.basic_get("small", auto_ack=True)[2] == b"tiny"
    assert ch.basic_get("large", auto_ack=True)[2] == b"y" * 5000

    ch.exchange_declare("prefixes", "x-c-prefix")
    ch.queue_declare("sensors")
    ch.queue_bind("sensors", "prefixes", "sensors.")
    ch.basic_publish("prefixes", "sensors.room1.temp", b"21.5")
    ch.basic_publish("prefixes", "logs.app", b"not me")
    assert drain(ch, "sensors", 1) == [b"21.5"]
    assert ch.basic_get("sensors")[0] is None


def test_panicking_plugin_rejects_publish_and_broker_survives(pbroker):
    c = pbroker.connect()
    ch = c.channel()
    ch.exchange_declare("fragile", "x-test-panic")
    ch.queue_declare("fragile-q")
    ch.queue_bind("fragile-q", "fragile", "")
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("fragile", "panic", b"boom")
    assert e.value.reply_code == 541
    assert pbroker.wait_log("panicked while routing")
    ch = c.channel()
    ch.basic_publish("fragile", "calm", b"ok")
    assert ch.basic_get("fragile-q", auto_ack=True)[2] == b"ok"


def test_durable_plugin_exchange_survives_restart_and_missing_plugin(tmp_path):
    plugins = make_plugin_dir(tmp_path / "plugins", broken=False)
    b = Broker(tmp_path, {"WARREN_PLUGINS__DIR": str(plugins)})
    try:
        ch = b.connect().channel()
        ch.exchange_declare("durable-hash", "x-consistent-hash", durable=True)
        ch.queue_declare("dh-q", durable=True)
        ch.queue_bind("dh-q", "durable-hash", "1")
        b.restart()
        ch = b.connect().channel()
        ch.exchange_declare("durable-hash", "x-consistent-hash", durable=True, passive=True)
        ch.basic_publish("durable-hash", "k", b"routed after restart")
        assert ch.basic_get("dh-q", auto_ack=True)[2] == b"routed after restart"
        # Without the plugin: a clear error, the broker starts, nothing is dropped.
        b.stop()
        b.extra_env = {"WARREN_PLUGINS__DIR": str(tmp_path / "empty")}
        b.start()
        assert b.wait_log("has type 'x-consistent-hash', which no loaded plugin provides")
        ch = b.connect().channel()
        ch.queue_declare("dh-q", durable=True, passive=True)
        with pytest.raises(ChannelClosedByBroker):
            ch.exchange_declare("durable-hash", "x-consistent-hash", passive=True)
        # A durable change meanwhile rewrites the definitions; they must
        # still hold the orphaned exchange and its binding.
        ch = b.connect().channel()
        ch.queue_declare("unrelated", durable=True)
        # Plugin back: the exchange and its binding are back too.
        b.stop()
        b.extra_env = {"WARREN_PLUGINS__DIR": str(plugins)}
        b.start()
        ch = b.connect().channel()
        ch.basic_publish("durable-hash", "k2", b"back")
        assert ch.basic_get("dh-q", auto_ack=True)[2] == b"back"
    finally:
        b.stop()


def test_management_api_lists_plugins_and_their_types(pbroker):
    status, plugins = pbroker.api("/api/plugins")
    assert status == 200
    by_name = {p["name"]: p for p in plugins}
    assert by_name["consistent-hash"]["exchange_types"] == ["x-consistent-hash"]
    assert by_name["c-prefix"]["exchange_types"] == ["x-c-prefix"]
    assert by_name["random"]["file"].endswith("libwarren_plugin_random.so")
    status, overview = pbroker.api("/api/overview")
    names = {t["name"] for t in overview["exchange_types"]}
    assert {"direct", "fanout", "topic", "headers", "x-random", "x-body-size"} <= names


def test_enabled_list_loads_only_named_plugins(tmp_path):
    plugins = make_plugin_dir(tmp_path / "plugins", broken=False)
    b = Broker(tmp_path, {"WARREN_PLUGINS__DIR": str(plugins), "WARREN_PLUGINS__ENABLED": "random,c-prefix"})
    try:
        assert b.wait_log("loaded plugin 'random'")
        assert b.wait_log("plugin 'consistent-hash' in")
        status, listed = b.api("/api/plugins")
        assert sorted(p["name"] for p in listed) == ["c-prefix", "random"]
        ch = b.connect().channel()
        ch.exchange_declare("r", "x-random")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            ch.exchange_declare("h", "x-consistent-hash")
        assert e.value.reply_code == 503
    finally:
        b.stop()


def test_consistent_hash_on_a_property(pbroker):
    ch = pbroker.connect().channel()
    ch.exchange_declare("by-msgid", "x-consistent-hash", arguments={"hash-property": "message_id"})
    qs = [f"mid-{i}" for i in range(3)]
    for q in qs:
        ch.queue_declare(q)
        ch.queue_bind(q, "by-msgid", "1")
    for i in range(30):
        ch.basic_publish("by-msgid", str(i), b"", pika.BasicProperties(message_id="order-42"))
    for i in range(30):
        ch.basic_publish("by-msgid", str(i), b"", pika.BasicProperties(message_id=f"order-{i}"))
    ch.confirm_delivery()
    counts = sorted(ch.queue_declare(q, passive=True).method.message_count for q in qs)
    # The 30 copies of order-42 all landed together; the others spread.
    assert counts[-1] >= 30 and sum(counts) == 60 and counts[0] > 0
