"""The RabbitMQ tutorials (https://www.rabbitmq.com/tutorials), run with pika
against Warren unchanged."""
import threading
import time
import uuid

import pika
import pytest

from conftest import drain


def test_hello_world(conn):
    ch = conn.channel()
    ch.queue_declare(queue="hello")
    ch.basic_publish(exchange="", routing_key="hello", body="Hello World!")
    assert drain(ch, "hello", 1) == [b"Hello World!"]


def test_work_queue_round_robin_and_manual_ack(broker):
    setup = broker.connect()
    ch = setup.channel()
    ch.queue_declare(queue="task_queue", durable=True)
    workers = [broker.connect() for _ in range(2)]
    got = {0: [], 1: []}

    def make_cb(idx):
        def cb(c, method, props, body):
            got[idx].append(body)
            c.basic_ack(method.delivery_tag)
        return cb

    # Both consumers are registered (consume-ok received) before publishing,
    # so dispatch alternates strictly, as in RabbitMQ's tutorial 2.
    for idx, w in enumerate(workers):
        w.channel().basic_consume("task_queue", make_cb(idx))
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "task_queue", f"task {i}".encode(),
                         pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    deadline = time.time() + 10
    while len(got[0]) + len(got[1]) < 10 and time.time() < deadline:
        for w in workers:
            w.process_data_events(time_limit=0.02)
    assert sorted(got[0] + got[1]) == sorted(f"task {i}".encode() for i in range(10))
    # Round-robin: each of the two workers got half.
    assert len(got[0]) == 5 and len(got[1]) == 5, got
    assert ch.queue_declare(queue="task_queue", passive=True).method.message_count == 0
    for w in workers:
        w.close()
    setup.close()


WORKER = r"""
import sys, pika
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(sys.argv[1])))
ch = conn.channel()
ch.basic_qos(prefetch_count=1)
def cb(c, method, props, body):
    print("got", body.decode(), flush=True)  # and never ack: the worker dies
ch.basic_consume("dies", cb)
ch.start_consuming()
"""


def test_worker_dies_message_redelivered(broker):
    import subprocess, sys
    c = broker.connect()
    ch = c.channel()
    ch.queue_declare(queue="dies", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "dies", b"important")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(broker.amqp_port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "got important"
    finally:
        worker.kill()  # SIGKILL: no close, no ack
        worker.wait()
    other = broker.connect().channel()
    got = []
    for method, props, body in other.consume("dies", inactivity_timeout=10):
        assert method is not None, "message was not redelivered"
        got.append((body, method.redelivered))
        other.basic_ack(method.delivery_tag)
        break
    assert got == [(b"important", True)]


def test_fair_dispatch_prefetch_one(broker):
    c = broker.connect()
    ch = c.channel()
    ch.queue_declare(queue="fair")
    slow = broker.connect()
    fast = broker.connect()
    sch, fch = slow.channel(), fast.channel()
    for x in (sch, fch):
        x.basic_qos(prefetch_count=1)
    slow_got, fast_got = [], []
    # The slow worker never acks its first message, so with prefetch=1
    # every other message must go to the fast worker.
    sch.basic_consume("fair", lambda c_, m, p, b: slow_got.append(b))
    def fast_cb(c_, m, p, b):
        fast_got.append(b)
        c_.basic_ack(m.delivery_tag)
    fch.basic_consume("fair", fast_cb)
    for i in range(10):
        ch.basic_publish("", "fair", str(i).encode())
    deadline = time.time() + 10
    while len(slow_got) + len(fast_got) < 10 and time.time() < deadline:
        slow.process_data_events(time_limit=0.02)
        fast.process_data_events(time_limit=0.02)
    assert len(slow_got) == 1
    assert len(fast_got) == 9
    slow.close(); fast.close(); c.close()


def test_fanout_publish_subscribe(broker):
    c = broker.connect()
    ch = c.channel()
    ch.exchange_declare(exchange="logs", exchange_type="fanout")
    subs = []
    for _ in range(3):
        sc = broker.connect().channel()
        r = sc.queue_declare(queue="", exclusive=True)
        assert r.method.queue.startswith("amq.gen-")
        sc.queue_bind(exchange="logs", queue=r.method.queue)
        subs.append((sc, r.method.queue))
    ch.basic_publish(exchange="logs", routing_key="", body=b"info: hello")
    for sc, q in subs:
        assert drain(sc, q, 1) == [b"info: hello"]


def test_direct_routing_by_severity(broker):
    c = broker.connect()
    ch = c.channel()
    ch.exchange_declare(exchange="direct_logs", exchange_type="direct")
    r = ch.queue_declare(queue="", exclusive=True)
    q = r.method.queue
    for sev in ("error", "warning"):
        ch.queue_bind(exchange="direct_logs", queue=q, routing_key=sev)
    for sev in ("info", "warning", "error", "debug"):
        ch.basic_publish(exchange="direct_logs", routing_key=sev, body=sev.encode())
    assert drain(ch, q, 2) == [b"warning", b"error"]
    m, _, _ = ch.basic_get(q)
    assert m is None


def test_topic_routing(broker):
    c = broker.connect()
    ch = c.channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    queues = {}
    for key in ("*.orange.*", "*.*.rabbit", "lazy.#", "#"):
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(exchange="topic_logs", queue=q, routing_key=key)
        queues[key] = q
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
            "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
            "quick.orange.male.rabbit", "lazy.orange.male.rabbit", "lazy", ""]
    for k in keys:
        ch.basic_publish(exchange="topic_logs", routing_key=k, body=k.encode())
    expect = {
        "*.orange.*": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        "*.*.rabbit": ["quick.orange.rabbit", "lazy.pink.rabbit"],
        "lazy.#": ["lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
                   "lazy.orange.male.rabbit", "lazy"],
        "#": keys,
    }
    for key, q in queues.items():
        want = [k.encode() for k in expect[key]]
        assert drain(ch, q, len(want)) == want, key
        assert ch.basic_get(q)[0] is None, key


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def rpc_server(broker, ready, stop):
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare(queue="rpc_queue")
    ch.basic_qos(prefetch_count=1)

    def on_request(c, method, props, body):
        response = fib(int(body))
        c.basic_publish(exchange="", routing_key=props.reply_to,
                        properties=pika.BasicProperties(correlation_id=props.correlation_id),
                        body=str(response))
        c.basic_ack(delivery_tag=method.delivery_tag)

    ch.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    ready.set()
    while not stop.is_set():
        conn.process_data_events(time_limit=0.05)
    conn.close()


@pytest.mark.parametrize("reply_mode", ["exclusive_queue", "direct_reply_to"])
def test_rpc_fibonacci(broker, reply_mode):
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=rpc_server, args=(broker, ready, stop), daemon=True)
    t.start()
    assert ready.wait(10)
    conn = broker.connect()
    ch = conn.channel()
    if reply_mode == "exclusive_queue":
        callback_queue = ch.queue_declare(queue="", exclusive=True).method.queue
        auto_ack = False
    else:
        callback_queue = "amq.rabbitmq.reply-to"
        auto_ack = True
    responses = {}

    def on_response(c, method, props, body):
        responses[props.correlation_id] = int(body)
        if not auto_ack:
            c.basic_ack(method.delivery_tag)

    ch.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=auto_ack)
    ids = {}
    for n in (1, 10, 20):
        corr = str(uuid.uuid4())
        ids[corr] = n
        ch.basic_publish(exchange="", routing_key="rpc_queue",
                         properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr),
                         body=str(n))
    deadline = time.time() + 15
    while len(responses) < 3 and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    stop.set()
    t.join(10)
    assert responses == {c: fib(n) for c, n in ids.items()}
    conn.close()
