"""Error cases: the codes and texts a pika user sees from RabbitMQ."""
import socket
import struct

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAuthenticationError


def test_passive_declare_missing_queue_404(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(queue="does-not-exist", passive=True)
    assert e.value.reply_code == 404
    assert "NOT_FOUND - no queue 'does-not-exist' in vhost '/'" in e.value.reply_text
    # The connection survives a channel error.
    assert conn.channel().queue_declare(queue="", exclusive=True).method.queue


def test_redeclare_with_other_flags_406(conn):
    ch = conn.channel()
    ch.queue_declare(queue="flags", durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(queue="flags", durable=False)
    assert e.value.reply_code == 406
    assert "inequivalent arg 'durable'" in e.value.reply_text
    ch = conn.channel()
    ch.exchange_declare("ex406", "direct")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("ex406", "fanout")
    assert e.value.reply_code == 406


def test_exclusive_queue_from_other_connection_405(broker):
    owner = broker.connect()
    q = owner.channel().queue_declare(queue="mine", exclusive=True).method.queue
    other = broker.connect()
    with pytest.raises(ChannelClosedByBroker) as e:
        other.channel().basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 405
    owner.close()
    # The exclusive queue goes with its connection.
    with pytest.raises(ChannelClosedByBroker) as e:
        other.channel().queue_declare(queue="mine", passive=True)
    assert e.value.reply_code == 404
    other.close()


def test_publish_to_missing_exchange_404(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("no-such-exchange", "k", b"x")
    assert e.value.reply_code == 404
    assert "no exchange 'no-such-exchange'" in e.value.reply_text


def test_reserved_names_403_and_unknown_type_503(broker):
    c = broker.connect()
    with pytest.raises(ChannelClosedByBroker) as e:
        c.channel().exchange_declare("amq.custom", "direct")
    assert e.value.reply_code == 403
    with pytest.raises(ConnectionClosedByBroker) as e:
        c.channel().exchange_declare("x-unknown", "no-such-type")
    assert e.value.reply_code == 503


def test_wrong_password_refused(broker):
    with pytest.raises((ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        broker.connect(credentials=pika.PlainCredentials("guest", "wrong"))
    assert broker.wait_log("authentication failed")


def test_unknown_vhost_530(broker):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        broker.connect(virtual_host="nope")
    assert "(530) \"NOT_ALLOWED - vhost 'nope' not found\"" in str(e.value)


def read_frame(sock):
    hdr = b""
    while len(hdr) < 7:
        chunk = sock.recv(7 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    kind, ch, size = struct.unpack(">BHI", hdr)
    payload = b""
    while len(payload) < size + 1:
        payload += sock.recv(size + 1 - len(payload))
    return kind, ch, payload[:-1]


def test_garbage_frame_closes_only_that_connection(broker, conn):
    ch = conn.channel()
    ch.queue_declare(queue="survivor")
    s = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=5)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    kind, _, payload = read_frame(s)  # connection.start
    assert kind == 1 and payload[:4] == b"\x00\x0a\x00\x0a"
    s.sendall(b"\x07\x00\x00\xff\xff\xff\xff" + b"junk" * 10)
    kind, _, payload = read_frame(s)
    cls, meth, code = struct.unpack(">HHH", payload[:6])
    assert (cls, meth, code) == (10, 50, 501)
    s.close()
    # A wrong protocol header gets our header back.
    s = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=5)
    s.sendall(b"HTTP/1.1 GET /\r\n")
    assert s.recv(8) == b"AMQP\x00\x00\x09\x01"
    s.close()
    ch.basic_publish("", "survivor", b"still here")
    assert ch.basic_get("survivor", auto_ack=True)[2] == b"still here"


def test_internal_exchange_refuses_publish_403(conn):
    ch = conn.channel()
    ch.exchange_declare("internal_x", "fanout", internal=True)
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("internal_x", "", b"no")
    assert e.value.reply_code == 403


def test_delete_conditions_and_purge(conn):
    ch = conn.channel()
    ch.exchange_declare("used_x", "direct")
    ch.queue_declare("cond_q")
    ch.queue_bind("cond_q", "used_x", "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete("used_x", if_unused=True)
    assert e.value.reply_code == 406
    ch = conn.channel()
    ch.basic_publish("", "cond_q", b"1")
    ch.basic_publish("", "cond_q", b"2")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_delete("cond_q", if_empty=True)
    assert e.value.reply_code == 406
    ch = conn.channel()
    tag = ch.basic_consume("cond_q", lambda *a: None, auto_ack=False)
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_delete("cond_q", if_unused=True)
    assert e.value.reply_code == 406
    ch.basic_cancel(tag)
    ch2 = conn.channel()
    # Messages delivered to the cancelled consumer stay unacked on its channel.
    ch.close()  # requeues them
    assert ch2.queue_purge("cond_q").method.message_count == 2
    assert ch2.queue_delete("cond_q").method.message_count == 0


def test_auto_delete_queue_and_exchange(conn):
    ch = conn.channel()
    ch.exchange_declare("ad_x", "fanout", auto_delete=True)
    ch.queue_declare("ad_q", auto_delete=True)
    ch.queue_bind("ad_q", "ad_x")
    tag = ch.basic_consume("ad_q", lambda *a: None)
    ch.basic_cancel(tag)
    # Last consumer gone: the queue goes, and with its binding the exchange.
    with pytest.raises(ChannelClosedByBroker):
        ch.queue_declare("ad_q", passive=True)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker):
        ch.exchange_declare("ad_x", passive=True)


def test_sigterm_closes_clients_with_320_and_exits_0(tmp_path):
    from conftest import Broker
    b = Broker(tmp_path)
    c = b.connect()
    c.channel()
    b.proc.send_signal(__import__("signal").SIGTERM)
    assert b.proc.wait(15) == 0
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.process_data_events(time_limit=1)
        c.channel()
    assert e.value.reply_code == 320


def test_second_exclusive_consumer_same_connection_403(broker):
    """RabbitMQ answers a conflicting consume on another channel of the same
    connection with a 403 channel error, not silence."""
    c = broker.connect()
    a, b = c.channel(), c.channel()
    a.queue_declare("excl-consume-q", auto_delete=True)
    a.basic_consume("excl-consume-q", lambda *x: None, exclusive=True)
    for exclusive in (True, False):
        ch = c.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.basic_consume("excl-consume-q", lambda *x: None, exclusive=exclusive)
        assert e.value.reply_code == 403
        assert "queue 'excl-consume-q' in vhost '/' in exclusive use" in e.value.reply_text
    # An exclusive consume on a queue that already has a consumer is refused too.
    b.queue_declare("excl-consume-q2", auto_delete=True)
    b.basic_consume("excl-consume-q2", lambda *x: None)
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume("excl-consume-q2", lambda *x: None, exclusive=True)
    assert e.value.reply_code == 403
    # The connection and the first channel are unharmed.
    assert c.is_open and a.is_open
    c.close()
