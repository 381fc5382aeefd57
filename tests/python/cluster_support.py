"""Helpers for cluster tests: several real Warren nodes that found a cluster
from seeds, on 127.0.0.1 or each in a network namespace of its own."""
import random
import socket
import subprocess
import time

from conftest import CTL, Broker

SECRET = "cluster-test-secret-0123456789"
# Short Raft timers so failover fits a test; the commit timeout bounds how
# long a minority keeps a client waiting before it refuses.
TIMING = {
    "WARREN_CLUSTER__HEARTBEAT_MS": "150",
    "WARREN_CLUSTER__ELECTION_TIMEOUT_MS": "1000",
    "WARREN_CLUSTER__COMMIT_TIMEOUT_MS": "3000",
}


def ctl(node, *args):
    """Run warrenctl against one node; fails the test on a non-zero exit."""
    return subprocess.run(
        [CTL, "--url", f"http://127.0.0.1:{node.http_port}", *args],
        check=True, capture_output=True, text=True, timeout=60,
    )


def free_port():
    """A free port below the ephemeral range: a node killed and started
    again rebinds its cluster port, which an outgoing connection (its
    peers redial it) must not have taken meanwhile."""
    lo = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = min(lo, int(f.read().split()[0]) - 2000)
    except OSError:
        pass
    for _ in range(200):
        port = random.randrange(max(1024, lo - 8000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class Cluster:
    def __init__(self, tmp_path, n=3):
        self.tmp = tmp_path
        secret = tmp_path / "secret"
        secret.write_text(SECRET + "\n")
        self.secret = secret
        self.addrs = self.founder_addrs(n)
        self.nodes = [self.start(i, self.addrs) for i in range(n)]

    def founder_addrs(self, n):
        return [f"127.0.0.1:{free_port()}" for _ in range(n)]

    def env(self, i, addr, seeds, secret=None):
        return {
            "WARREN_CLUSTER__BIND": addr,
            "WARREN_CLUSTER__SEEDS": ",".join(seeds),
            "WARREN_CLUSTER__SECRET_FILE": str(secret or self.secret),
            "WARREN_CLUSTER__NODE_NAME": f"warren{i + 1}",
            **TIMING,
        }

    def start(self, i, seeds, addr=None, secret=None):
        addr = addr or self.addrs[i]
        return Broker(self.tmp / f"n{i + 1}", self.env(i, addr, seeds, secret))

    def status(self, node):
        code, body = node.api("/api/cluster")
        return body if code == 200 else None

    def wait_formed(self, nodes=None, voters=3, timeout=30):
        """Until every given node names the same leader and sees `voters` voters running."""
        nodes = nodes or self.nodes
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            seen = [self.status(n) for n in nodes]
            last = seen
            ok = all(
                s and s["leader"] and sum(1 for m in s["nodes"] if m["voter"] and m["running"]) == voters
                for s in seen
            )
            if ok and len({s["leader"] for s in seen}) == 1:
                return seen[0]["leader"]
            time.sleep(0.1)
        raise AssertionError(f"cluster did not form: {last}")

    def by_name(self, name, nodes=None):
        for n in nodes or self.nodes:
            s = self.status(n)
            if s and s["node"] == name:
                return n
        raise AssertionError(f"no node {name}")

    def stop(self):
        for n in self.nodes:
            n.stop()


def eventually(check, timeout=10, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            r = check()
            if r:
                return r
        except Exception as e:  # noqa: BLE001 - the last failure is reported below
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s: {last}")


def passive_ok(node, queue):
    with node.connect() as c:
        c.channel().queue_declare(queue, passive=True)
    return True




def sh(*args):
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class NetnsCluster(Cluster):
    """Three nodes, each in a network namespace of its own, with two links:
    one on a cluster bridge (Raft traffic) and one on a client bridge that
    this test process also sits on. Cutting a node's cluster link
    partitions it from its peers while clients can still reach it."""

    CLUSTER_NET = "10.77.1"
    CLIENT_NET = "10.77.2"

    def __init__(self, tmp_path, n=3):
        self.tag = f"wt{__import__('os').getpid() % 10000}"
        self.n = n
        self.made = []
        try:
            self.make_net()
            super().__init__(tmp_path, n)
        except BaseException:
            self.teardown_net()
            raise

    def ns(self, i):
        return f"{self.tag}n{i + 1}"

    def make_net(self):
        for br, ip in ((f"{self.tag}bc", None), (f"{self.tag}ba", f"{self.CLIENT_NET}.254/24")):
            sh("ip", "link", "add", br, "type", "bridge")
            self.made.append(("link", br))
            if ip:
                sh("ip", "addr", "add", ip, "dev", br)
            sh("ip", "link", "set", br, "up")
        for i in range(self.n):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            self.made.append(("netns", ns))
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            for kind, net, br in (("c", self.CLUSTER_NET, f"{self.tag}bc"), ("a", self.CLIENT_NET, f"{self.tag}ba")):
                inner, outer = f"{self.tag}{kind}{i}i", f"{self.tag}{kind}{i}o"
                sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
                self.made.append(("link", outer))
                sh("ip", "link", "set", inner, "netns", ns)
                sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.{i + 1}/24", "dev", inner)
                sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
                sh("ip", "link", "set", outer, "master", br, "up")

    def teardown_net(self):
        for kind, name in reversed(self.made):
            cmd = ("ip", "link", "del", name) if kind == "link" else ("ip", "netns", "del", name)
            subprocess.run(cmd, capture_output=True, timeout=30)
        self.made = []

    def cluster_addr(self, i):
        return f"{self.CLUSTER_NET}.{i + 1}:25672"

    def founder_addrs(self, n):
        return [self.cluster_addr(k) for k in range(n)]

    def start(self, i, seeds, addr=None, secret=None):
        host = f"{self.CLIENT_NET}.{i + 1}"
        env = self.env(i, self.cluster_addr(i), seeds, secret)
        env.update({
            "WARREN_AMQP__BIND": f"{host}:5672",
            "WARREN_HTTP__BIND": f"{host}:15672",
            "WARREN_MQTT__BIND": f"{host}:1883",
            "WARREN_MQTT__WS_BIND": "",
            # This test process is not on the nodes' loopback.
            "WARREN_DEFAULT_USER__LOOPBACK_ONLY": "false",
        })
        return Broker(self.tmp / f"n{i + 1}", env, host=host,
                      cmd_prefix=("ip", "netns", "exec", self.ns(i)))

    def cut(self, i):
        """Partition node i: its cluster link goes down."""
        sh("ip", "link", "set", f"{self.tag}c{i}o", "down")

    def heal(self, i):
        sh("ip", "link", "set", f"{self.tag}c{i}o", "up")

    def index(self, node):
        return self.nodes.index(node)

    def stop(self):
        try:
            super().stop()
        finally:
            self.teardown_net()
