"""A cluster of three real Warren processes on 127.0.0.1: forming from seeds,
definitions replicated through Raft, kill -9 of the leader, a minority that
refuses changes, joining and forgetting a node, and the shared secret.
Every wait is bounded; each node is ended by its own PID."""
import socket
import time

import pika
import pytest

from cluster_support import Cluster, ctl, eventually, free_port, passive_ok


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def test_three_nodes_form_and_replicate_definitions(cluster):
    a, b, c = cluster.nodes
    leader = cluster.wait_formed()
    assert leader in {"warren1", "warren2", "warren3"}
    # A queue, exchange and binding declared on one node...
    with a.connect() as conn:
        ch = conn.channel()
        ch.exchange_declare("cl.x", "topic", durable=True)
        ch.queue_declare("cl.q", durable=True)
        ch.queue_bind("cl.q", "cl.x", "sensors.*.temp")
        # ...are there at once on the node that answered declare-ok.
        ch.queue_declare("cl.q", passive=True)
    # And reach every other node.
    for n in (b, c):
        eventually(lambda n=n: passive_ok(n, "cl.q"), what="queue on every node")
        eventually(
            lambda n=n: any(
                x["source"] == "cl.x" and x["routing_key"] == "sensors.*.temp"
                for x in n.api("/api/bindings/%2F")[1]
            ),
            what="binding on every node",
        )
    # Users and vhosts changed through HTTP and warrenctl on other nodes.
    assert c.api("/api/users/carol", method="PUT", body={"password": "pw", "tags": ""})[0] in (201, 204)
    ctl(b, "add_vhost", "cl-vhost")
    eventually(lambda: a.api("/api/users/carol")[0] == 200, what="user on node a")
    eventually(lambda: c.api("/api/vhosts/cl-vhost")[0] == 200, what="vhost on node c")
    # Deletion too.
    with b.connect() as conn:
        conn.channel().queue_delete("cl.q")
    eventually(lambda: a.api("/api/queues/%2F/cl.q")[0] == 404, what="queue gone on a")
    # Operators see every node, and the Raft families.
    names = {n["name"] for n in a.api("/api/nodes")[1]}
    assert names == {"warren1", "warren2", "warren3"}, names
    _, metrics = a.text("/metrics")
    assert "warren_raft_term " in metrics and "warren_raft_commit_index " in metrics
    assert 'warren_raft_leader{node="%s"} 1' % leader in metrics
    out = ctl(c, "cluster_status").stdout
    assert f"Leader: {leader}" in out and out.count(" running") == 3, out


def test_leader_killed_the_others_serve_and_it_catches_up(cluster):
    leader = cluster.wait_formed()
    dead = cluster.by_name(leader)
    rest = [n for n in cluster.nodes if n is not dead]
    dead.kill9()
    t0 = time.time()
    # The two survivors elect a leader and accept a change; bounded by a few
    # election timeouts plus the commit timeout of one refused try.
    def declare():
        with rest[0].connect() as conn:
            conn.channel().queue_declare("after-failover", durable=True)
        return True

    eventually(declare, timeout=15, what="declare after the leader's loss")
    took = time.time() - t0
    new_leader = cluster.wait_formed(rest, voters=2)
    assert new_leader != leader
    assert took < 15
    eventually(lambda: passive_ok(rest[1], "after-failover"), what="change on the other survivor")
    # The killed node comes back and catches up from the log.
    dead.start()
    cluster.wait_formed()
    eventually(lambda: passive_ok(dead, "after-failover"), timeout=15, what="catch-up after restart")


def test_minority_refuses_changes_and_heals(cluster):
    cluster.wait_formed()
    a, b, c = cluster.nodes
    b.kill9()
    c.kill9()
    with a.connect() as conn:
        ch = conn.channel()
        t0 = time.time()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("minority-q", durable=True)
        assert e.value.reply_code == 541
        assert "no quorum" in e.value.reply_text
        # Refused within the commit timeout, not left hanging.
        assert time.time() - t0 < 10
    assert a.api("/api/queues/%2F/minority-q")[0] == 404
    code, body = a.api("/api/vhosts/minority-vhost", method="PUT")
    assert code == 503 and "no quorum" in body["reason"]
    assert a.api("/api/vhosts/minority-vhost")[0] == 404
    # Deleting is refused the same way, and the user stays.
    code, body = a.api("/api/users/guest", method="DELETE")
    assert code == 503 and "no quorum" in body["reason"]
    assert a.api("/api/users/guest")[0] == 200
    assert "cannot commit definition changes" in a.log()
    # Heal: the others return; the cluster agrees and takes changes again.
    b.start()
    c.start()
    cluster.wait_formed()
    with c.connect() as conn:
        conn.channel().queue_declare("healed-q", durable=True)
    for n in cluster.nodes:
        eventually(lambda n=n: passive_ok(n, "healed-q"), what="change after healing")
        assert n.api("/api/queues/%2F/minority-q")[0] == 404


def test_whole_cluster_restarts_with_its_definitions(cluster):
    cluster.wait_formed()
    a = cluster.nodes[0]
    with a.connect() as conn:
        conn.channel().queue_declare("survives-restart", durable=True)
    for n in cluster.nodes:
        eventually(lambda n=n: passive_ok(n, "survives-restart"), what="replicated")
    for n in cluster.nodes:
        n.kill9()
    for n in cluster.nodes:
        n.start()
    cluster.wait_formed()
    for n in cluster.nodes:
        assert passive_ok(n, "survives-restart")
    with cluster.nodes[2].connect() as conn:
        conn.channel().queue_declare("after-restart", durable=True)
    eventually(lambda: passive_ok(a, "after-restart"), what="change after restart")


def test_node_joins_through_seeds_and_is_forgotten(cluster):
    cluster.wait_formed()
    with cluster.nodes[0].connect() as conn:
        conn.channel().queue_declare("before-join", durable=True)
    addr = f"127.0.0.1:{free_port()}"
    # Not among the seeds: it joins through them.
    d = cluster.start(3, cluster.addrs, addr=addr)
    try:
        cluster.wait_formed(cluster.nodes + [d], voters=4)
        eventually(lambda: passive_ok(d, "before-join"), what="joiner has the definitions")
        ctl(cluster.nodes[1], "forget_cluster_node", "warren4")
        eventually(
            lambda: sum(1 for m in cluster.status(cluster.nodes[0])["nodes"] if m["voter"]) == 3,
            what="three voters after forget",
        )
    finally:
        d.stop()


def test_wrong_secret_is_refused(cluster):
    cluster.wait_formed()
    other = cluster.tmp / "other-secret"
    other.write_text("not-the-cluster-secret-at-all\n")
    addr = f"127.0.0.1:{free_port()}"
    intruder = cluster.start(4, cluster.addrs, addr=addr, secret=other)
    try:
        assert eventually(
            lambda: any("does not share this cluster's secret" in n.log() for n in cluster.nodes),
            what="refusal logged",
        )
        time.sleep(0.5)  # a bounded look: the intruder must not have been added
        members = {m["addr"] for m in cluster.status(cluster.nodes[0])["nodes"]}
        assert addr not in members
        # Garbage on the cluster port is refused too, and the cluster stays up.
        host, port = cluster.addrs[0].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"x" * 64)
            s.settimeout(5)
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass  # closed with our bytes unread: refused all the same
        cluster.wait_formed()
    finally:
        intruder.stop()


def test_single_node_opens_no_cluster_listener(broker):
    code, body = broker.api("/api/cluster")
    assert code == 400 and "not in a cluster" in body["reason"]
    assert "cluster '" not in broker.log()
    nodes = broker.api("/api/nodes")[1]
    assert len(nodes) == 1


def test_node_down_past_a_snapshot_catches_up_from_it(tmp_path):
    import cluster_support
    saved = dict(cluster_support.TIMING)
    cluster_support.TIMING["WARREN_CLUSTER__SNAPSHOT_LOGS"] = "20"
    try:
        c = Cluster(tmp_path)
    finally:
        cluster_support.TIMING.clear()
        cluster_support.TIMING.update(saved)
    try:
        leader = c.by_name(c.wait_formed())
        a = leader
        down = next(n for n in c.nodes if n is not leader)
        with a.connect() as conn:
            conn.channel().queue_declare("gone-while-down", durable=True)
        eventually(lambda: passive_ok(down, "gone-while-down"), what="replicated before the stop")
        down.kill9()
        with a.connect() as conn:
            ch = conn.channel()
            for i in range(60):
                ch.queue_declare(f"snap-{i}", durable=True)
            ch.queue_delete("gone-while-down")
        # The leader has snapshotted and purged what the stopped node lacks.
        eventually(lambda: c.status(a)["snapshot_index"] >= 40, what="a snapshot on the leader side")
        down.start()
        c.wait_formed()
        eventually(lambda: passive_ok(down, "snap-59"), timeout=20, what="catch-up from the snapshot")
        names = {q["name"] for q in down.api("/api/queues")[1]}
        assert {f"snap-{i}" for i in range(60)} <= names
        assert "gone-while-down" not in names
        assert "installing cluster snapshot" in down.log()
    finally:
        c.stop()


def test_mqtt_client_id_takeover_across_nodes(cluster):
    import threading

    import paho.mqtt.client as mqtt

    cluster.wait_formed()
    a, b, _ = cluster.nodes
    gone = threading.Event()

    def client(node, on_disconnect=None):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="roaming-device",
                        protocol=mqtt.MQTTv311, clean_session=False)
        connected = threading.Event()
        c.on_connect = lambda *args: connected.set()
        if on_disconnect:
            c.on_disconnect = on_disconnect
        c.connect("127.0.0.1", node.mqtt_port, keepalive=30)
        c.loop_start()
        assert connected.wait(10)
        return c

    first = client(a, on_disconnect=lambda *args: gone.set())
    try:
        first.subscribe("sensors/+/temp", qos=1)
        # The persistent session's queue is a replicated definition.
        eventually(lambda: any(q["name"].startswith("mqtt-subscription-roaming-device")
                               for q in b.api("/api/queues")[1]), what="session queue on node b")
        first.reconnect_delay_set(60, 60)  # do not come back and take over in turn
        second = client(b)
        try:
            assert gone.wait(10), "the session on node a did not end"
            assert a.wait_log("connected on another node")
            assert second.is_connected()
        finally:
            second.loop_stop()
            second.disconnect()
    finally:
        first.loop_stop()


def test_limits_and_definitions_import_are_replicated(cluster):
    cluster.wait_formed()
    a, b, c = cluster.nodes
    assert a.api("/api/vhosts/lim-cl", method="PUT")[0] in (201, 204)
    eventually(lambda: b.api("/api/vhosts/lim-cl")[0] == 200, what="vhost on b")
    code, _ = a.api("/api/vhost-limits/lim-cl/max-queues", method="PUT", body={"value": 1})
    assert code in (201, 204)
    eventually(lambda: b.api("/api/vhost-limits/lim-cl")[1] == [{"vhost": "lim-cl", "value": {"max-queues": 1}}],
               what="limit on b")
    # Enforced on another node than the one that set it.
    assert b.api("/api/permissions/lim-cl/guest", method="PUT",
                 body={"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    with b.connect(virtual_host="lim-cl") as conn:
        ch = conn.channel()
        ch.queue_declare("first", durable=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("second", durable=True)
        assert e.value.reply_code == 406
    # A definitions import on one node reaches the others.
    defs = {
        "vhosts": [{"name": "imported-vh"}],
        "queues": [{"name": "imported-q", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [{"name": "imported-x", "vhost": "/", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": "imported-x", "vhost": "/", "destination": "imported-q",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }
    assert c.api("/api/definitions", method="POST", body=defs)[0] == 204
    for n in (a, b):
        eventually(lambda n=n: passive_ok(n, "imported-q"), what="imported queue")
        eventually(lambda n=n: n.api("/api/vhosts/imported-vh")[0] == 200, what="imported vhost")
        eventually(lambda n=n: any(x["source"] == "imported-x" for x in n.api("/api/bindings/%2F")[1]),
                   what="imported binding")
