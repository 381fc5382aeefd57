"""Partitions, made for real: three nodes in network namespaces of their
own, the leader's cluster link cut with `ip link`. The majority elects a new
leader and takes changes; the cut-off leader refuses them (541) while its
clients can still reach it; after healing every node agrees. Namespaces and
bridges are removed afterwards, pass or fail."""
import os
import shutil

import pika
import pytest

from cluster_support import NetnsCluster, eventually, passive_ok

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2",
)

CYCLES = 2


@pytest.fixture
def cluster(tmp_path):
    c = NetnsCluster(tmp_path)
    yield c
    c.stop()


def declare(node, name):
    with node.connect() as conn:
        conn.channel().queue_declare(name, durable=True)
    return True


def test_partitioned_leader_refuses_and_the_majority_goes_on(cluster):
    for cycle in range(CYCLES):
        leader = cluster.wait_formed(timeout=40)
        old = cluster.by_name(leader)
        i = cluster.index(old)
        majority = [n for n in cluster.nodes if n is not old]
        cluster.cut(i)
        try:
            # The majority elects a new leader and commits a change.
            eventually(lambda: declare(majority[0], f"majority-{cycle}"), timeout=20,
                       what="a change on the majority side")
            new = cluster.wait_formed(majority, voters=2, timeout=20)
            assert new != leader
            # The cut-off node, reachable by its clients, refuses changes.
            with old.connect() as conn:
                with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                    conn.channel().queue_declare(f"minority-{cycle}", durable=True)
            assert e.value.reply_code == 541, e.value
        finally:
            cluster.heal(i)
        cluster.wait_formed(timeout=40)
        for n in cluster.nodes:
            eventually(lambda n=n: passive_ok(n, f"majority-{cycle}"), timeout=20,
                       what="the majority's change everywhere after healing")
            assert n.api(f"/api/queues/%2F/minority-{cycle}")[0] == 404
        terms = {cluster.status(n)["term"] for n in cluster.nodes}
        assert len(terms) == 1, terms
