"""The other Python clients RabbitMQ users run: Celery (a real worker
process, rpc:// results, remote control over the pidbox fanout), kombu and
aio-pika."""
import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

TASKS = textwrap.dedent(
    """
    import os
    from celery import Celery

    app = Celery("warren_tasks", broker=os.environ["BROKER_URL"], backend="rpc://")
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def shout(text):
        return text.upper()
    """
)


@pytest.fixture
def celery_worker(broker, tmp_path):
    (tmp_path / "warren_tasks.py").write_text(TASKS)
    env = dict(os.environ, BROKER_URL=f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}//")
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "warren_tasks", "worker", "--pool=solo",
         "--concurrency=1", "--loglevel=info", "--hostname=warren-test@%h"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    sys.path.insert(0, str(tmp_path))
    os.environ["BROKER_URL"] = env["BROKER_URL"]
    import warren_tasks
    try:
        yield warren_tasks, tmp_path / "worker.log"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        sys.path.remove(str(tmp_path))
        sys.modules.pop("warren_tasks", None)


def test_celery_worker_runs_tasks_and_answers_control(celery_worker):
    tasks, log = celery_worker
    # Remote control (pidbox fanout, reply queues with x-expires): the worker
    # answers ping once it is up.
    replies = []
    deadline = time.time() + 60
    while not replies and time.time() < deadline:
        replies = tasks.app.control.ping(timeout=1.0)
    assert replies and "pong" in str(replies), log.read_text()[-3000:]
    results = [tasks.add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
    assert tasks.shout.apply_async(("hello",), queue="celery").get(timeout=30) == "HELLO"
    assert "succeeded" in log.read_text()


def test_kombu_simple_queue_and_producer(broker):
    from kombu import Connection, Exchange, Queue

    url = f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}//"
    with Connection(url) as conn:
        q = conn.SimpleQueue("kombu-simple")
        for i in range(5):
            q.put({"n": i})
        got = [q.get(block=True, timeout=10) for _ in range(5)]
        assert [m.payload["n"] for m in got] == list(range(5))
        for m in got:
            m.ack()
        q.close()

        x = Exchange("kombu-x", type="topic", durable=True)
        queue = Queue("kombu-q", exchange=x, routing_key="jobs.#")
        received = []
        with conn.Consumer(queue, callbacks=[lambda body, msg: (received.append(body), msg.ack())]):
            producer = conn.Producer()
            producer.publish({"job": 1}, exchange=x, routing_key="jobs.new", declare=[queue],
                             serializer="json", delivery_mode=2)
            producer.publish({"job": 2}, exchange=x, routing_key="other", serializer="json")
            deadline = time.time() + 10
            while not received and time.time() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
        assert received == [{"job": 1}]


def test_aio_pika_confirms_prefetch_and_rpc(broker):
    import aio_pika

    async def main():
        url = f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/"
        conn = await aio_pika.connect_robust(url)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=1)
            q = await ch.declare_queue("aio-work", durable=True)
            for i in range(10):
                await ch.default_exchange.publish(
                    aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="aio-work")
            got = []
            async with q.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        got.append(int(msg.body))
                    if len(got) == 10:
                        break
            assert got == list(range(10))

            # RPC as in the RabbitMQ tutorial: exclusive callback queue,
            # reply_to and correlation_id.
            server_q = await ch.declare_queue("aio-rpc")

            async def serve(msg):
                async with msg.process():
                    n = int(msg.body)
                    await ch.default_exchange.publish(
                        aio_pika.Message(str(n * n).encode(), correlation_id=msg.correlation_id),
                        routing_key=msg.reply_to)

            await server_q.consume(serve)
            callback = await ch.declare_queue(exclusive=True)
            await ch.default_exchange.publish(
                aio_pika.Message(b"12", reply_to=callback.name, correlation_id="c-12"),
                routing_key="aio-rpc")
            async with callback.iterator(timeout=10) as it:
                async for reply in it:
                    async with reply.process():
                        assert (reply.body, reply.correlation_id) == (b"144", "c-12")
                    break

    asyncio.run(asyncio.wait_for(main(), 60))
