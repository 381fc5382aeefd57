"""RabbitMQ queue and exchange features: dead-letter exchanges (rejected,
expired and overflowed messages republished with x-death headers),
alternate exchanges and priority queues."""
import time

import pika


def next_message(conn, ch, queue, timeout=10):
    """The next message of `queue` (auto-ack) within `timeout` seconds."""
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=timeout):
        ch.cancel()
        assert method is not None, f"nothing arrived in {queue} within {timeout} s"
        return method, props, body


def test_rejected_message_goes_to_dlx_with_x_death(conn):
    ch = conn.channel()
    ch.exchange_declare("dlx-fan", "fanout")
    ch.queue_declare("dlx-dead")
    ch.queue_bind("dlx-dead", "dlx-fan")
    ch.queue_declare("dlx-work", arguments={"x-dead-letter-exchange": "dlx-fan"})
    ch.basic_publish("", "dlx-work", b"bad job",
                     pika.BasicProperties(headers={"job": "7"}, delivery_mode=2))
    m, _, _ = ch.basic_get("dlx-work")
    ch.basic_reject(m.delivery_tag, requeue=False)
    method, props, body = next_message(conn, ch, "dlx-dead")
    assert body == b"bad job" and method.routing_key == "dlx-work"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["exchange"], death["count"]) == (
        "rejected", "dlx-work", "", 1)
    assert death["routing-keys"] == ["dlx-work"]
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["job"] == "7" and props.delivery_mode == 2
    # A nack with requeue=false dead-letters too; an ack does not.
    ch.basic_publish("", "dlx-work", b"nacked")
    ch.basic_publish("", "dlx-work", b"acked")
    m1, _, _ = ch.basic_get("dlx-work")
    m2, _, _ = ch.basic_get("dlx-work")
    ch.basic_nack(m1.delivery_tag, requeue=False)
    ch.basic_ack(m2.delivery_tag)
    _, _, body = next_message(conn, ch, "dlx-dead")
    assert body == b"nacked"
    assert ch.queue_declare("dlx-dead", passive=True).method.message_count == 0


def test_ttl_expiry_dead_letters_with_routing_key_override(conn):
    """The delayed-retry pattern: a wait queue with a TTL and no consumers
    dead-letters into the work queue through the default exchange."""
    ch = conn.channel()
    ch.queue_declare("retry-work")
    ch.queue_declare("retry-wait", arguments={
        "x-message-ttl": 200, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "retry-work"})
    sent = time.time()
    ch.basic_publish("", "retry-wait", b"try again",
                     pika.BasicProperties(expiration="60000"))
    method, props, body = next_message(conn, ch, "retry-work")
    assert body == b"try again" and time.time() - sent >= 0.19
    assert method.routing_key == "retry-work"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("expired", "retry-wait")
    assert death["original-expiration"] == "60000"
    assert props.expiration is None  # the per-message TTL is removed


def test_max_length_overflow_dead_letters_the_head(conn):
    ch = conn.channel()
    ch.queue_declare("ml-dead")
    ch.queue_declare("ml-bounded", arguments={
        "x-max-length": 1, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "ml-dead"})
    ch.basic_publish("", "ml-bounded", b"first")
    ch.basic_publish("", "ml-bounded", b"second")
    _, props, body = next_message(conn, ch, "ml-dead")
    assert body == b"first" and props.headers["x-death"][0]["reason"] == "maxlen"
    assert ch.queue_declare("ml-bounded", passive=True).method.message_count == 1


def test_expiry_cycle_is_cut(broker, conn):
    ch = conn.channel()
    # Expires back into itself: one round is allowed, the second is a cycle.
    ch.queue_declare("cycle-q", arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "cycle-q"})
    ch.basic_publish("", "cycle-q", b"round and round")
    assert broker.wait_log("dead-letter cycle without rejection", timeout=10)
    assert ch.queue_declare("cycle-q", passive=True).method.message_count == 0


def test_bad_dead_letter_arguments_are_406(conn):
    import pytest
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("dlx-bad", arguments={"x-dead-letter-routing-key": "k"})
    assert e.value.reply_code == 406
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("dlx-bad2", arguments={"x-dead-letter-exchange": 5})
    assert e.value.reply_code == 406


def test_alternate_exchange_takes_unroutable_messages(conn):
    ch = conn.channel()
    ch.exchange_declare("ae-fallback", "fanout")
    ch.queue_declare("ae-unrouted")
    ch.queue_bind("ae-unrouted", "ae-fallback")
    ch.exchange_declare("ae-main", "direct", arguments={"alternate-exchange": "ae-fallback"})
    ch.queue_declare("ae-routed")
    ch.queue_bind("ae-routed", "ae-main", "known")
    ch.confirm_delivery()
    # Mandatory publishes: the alternate exchange routed it, so no return.
    ch.basic_publish("ae-main", "known", b"k", mandatory=True)
    ch.basic_publish("ae-main", "unknown", b"u", mandatory=True)
    _, _, body = next_message(conn, ch, "ae-routed")
    assert body == b"k"
    method, _, body = next_message(conn, ch, "ae-unrouted")
    assert (body, method.exchange, method.routing_key) == (b"u", "ae-main", "unknown")
    # An alternate exchange that does not exist leaves the message unroutable.
    ch.exchange_declare("ae-broken", "direct", arguments={"alternate-exchange": "no-such-x"})
    import pytest
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("ae-broken", "k", b"lost", mandatory=True)


def test_priority_queue_delivers_highest_first(conn):
    ch = conn.channel()
    ch.queue_declare("prio-q", arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    for body, prio in ((b"low", 1), (b"high", 9), (b"mid", 5), (b"none", None), (b"capped", 200)):
        ch.basic_publish("", "prio-q", body, pika.BasicProperties(priority=prio))
    order = []
    for _ in range(5):
        m, _, body = ch.basic_get("prio-q", auto_ack=True)
        order.append(body)
    # 200 is capped at the queue's maximum (10): above 9.
    assert order == [b"capped", b"high", b"mid", b"low", b"none"]
    # A requeued message goes back to its place within its priority.
    ch.basic_publish("", "prio-q", b"a", pika.BasicProperties(priority=5))
    ch.basic_publish("", "prio-q", b"b", pika.BasicProperties(priority=5))
    ch.basic_publish("", "prio-q", b"top", pika.BasicProperties(priority=8))
    m1, _, body1 = ch.basic_get("prio-q")
    m2, _, body2 = ch.basic_get("prio-q")
    assert (body1, body2) == (b"top", b"a")
    ch.basic_nack(m2.delivery_tag, requeue=True)
    ch.basic_ack(m1.delivery_tag)
    m, _, body = ch.basic_get("prio-q", auto_ack=True)
    assert body == b"a" and m.redelivered
    m, _, body = ch.basic_get("prio-q", auto_ack=True)
    assert body == b"b"
    import pytest
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("prio-bad", arguments={"x-max-priority": 0})
    assert e.value.reply_code == 406


def test_consumer_priorities(conn):
    ch = conn.channel()
    ch.queue_declare("cprio-q")
    got = {"high": [], "low": []}
    high = conn.channel()
    high.basic_qos(prefetch_count=3)
    high.basic_consume("cprio-q", lambda c, m, p, b: got["high"].append(b),
                       arguments={"x-priority": 10})
    low = conn.channel()
    low.basic_qos(prefetch_count=10)
    low.basic_consume("cprio-q", lambda c, m, p, b: got["low"].append(b))
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "cprio-q", b"%d" % i)
    deadline = time.time() + 10
    while len(got["high"]) + len(got["low"]) < 5 and time.time() < deadline:
        conn.process_data_events(0.05)
    # The high-priority consumer takes all it has credit for (3); only then
    # does the lower one get messages (round-robin would have split 3/2 the
    # other way round or alternated).
    assert got["high"] == [b"0", b"1", b"2"] and got["low"] == [b"3", b"4"]
    import pytest
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c = conn.channel()
        c.basic_consume("cprio-q", lambda *a: None, arguments={"x-priority": "high"})
    assert e.value.reply_code == 406


def test_reject_publish_dlx_nacks_and_dead_letters(conn):
    ch = conn.channel()
    ch.queue_declare("rpd-dead")
    ch.queue_declare("rpd-full", arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rpd-dead"})
    ch.confirm_delivery()
    ch.basic_publish("", "rpd-full", b"kept")
    import pytest
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rpd-full", b"refused")
    _, props, body = next_message(conn, ch, "rpd-dead")
    assert body == b"refused" and props.headers["x-death"][0]["reason"] == "maxlen"
    m, _, body = ch.basic_get("rpd-full", auto_ack=True)
    assert body == b"kept"
