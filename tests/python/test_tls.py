"""TLS on every listener: pika over AMQPS (PLAIN and EXTERNAL), paho over
MQTT TLS and wss with certificate login, openssl s_client's protocol
versions, an unsigned client certificate, SIGHUP reload, update-secret, and
warrenctl over HTTPS. Certificates are made here with `cryptography`; no
private key is checked in."""
import datetime
import ipaddress
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt
import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import BIN, CTL, Broker

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


class Pki:
    """A CA in a directory, issuing PEM certificate/key file pairs."""

    def __init__(self, d, name):
        self.dir = d
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = d / f"{name.replace(' ', '_')}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, cn, stem, server=False):
        """Write stem.pem and stem.key; returns (cert path, key path, serial)."""
        key = ec.generate_private_key(ec.SECP256R1())
        b = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key())
        if server:
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file, cert.serial_number


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = Pki(d, "warren test ca")
    ca.server = ca.issue("localhost", "server", server=True)
    ca.client = ca.issue("certuser", "client")
    ca.nobody = ca.issue("nobody", "nobody")
    rogue = Pki(d, "rogue ca")
    ca.rogue_client = rogue.issue("certuser", "rogue-client")
    return ca


@pytest.fixture(scope="module")
def tls(tmp_path_factory, pki):
    cert, key, _ = pki.server
    b = Broker(
        tmp_path_factory.mktemp("warren-tls"),
        extra_env={
            "WARREN_TLS__CERT_FILE": str(cert),
            "WARREN_TLS__KEY_FILE": str(key),
            "WARREN_TLS__CA_FILE": str(pki.ca_file),
            "WARREN_TLS__VERIFY_PEER": "true",
            "WARREN_TLS__FAIL_IF_NO_PEER_CERT": "false",
            "WARREN_MQTT__SSL_CERT_LOGIN": "true",
        },
    )
    for user, pw in [("certuser", "unused-pw"), ("rotator", "pw1")]:
        status, _ = b.api(f"/api/users/{user}", method="PUT", body={"password": pw, "tags": ""})
        assert status in (201, 204)
        status, _ = b.api(f"/api/permissions/%2F/{user}", method="PUT", body=ALL)
        assert status in (201, 204)
    yield b
    b.stop()


def context(pki, client=None):
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if client:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def amqps(b, pki, client=None, credentials=None):
    opts = pika.SSLOptions(context(pki, client), server_hostname="localhost")
    params = pika.ConnectionParameters(
        "127.0.0.1",
        b.amqps_port,
        ssl_options=opts,
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
    )
    return pika.BlockingConnection(params)


def round_trip(conn, name):
    ch = conn.channel()
    ch.queue_declare(name, auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"over tls")
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert method is not None and body == b"over tls"
    return ch


def connection_users(b):
    status, conns = b.api("/api/connections")
    assert status == 200
    return conns


def test_pika_amqps_plain_login_and_plain_port_beside(tls, pki):
    with amqps(tls, pki) as c:
        round_trip(c, "tls-plain")
        # The plain listener keeps working beside it.
        with tls.connect(client_properties={"connection_name": "plain-beside"}) as p:
            round_trip(p, "tcp-plain")
            # Listings say which is which, as RabbitMQ's `ssl`.
            ssl_by_name = {x["client_properties"]["connection_name"]: x["ssl"]
                           for x in connection_users(tls)}
            assert ssl_by_name.pop("plain-beside") is False
            assert True in ssl_by_name.values(), ssl_by_name


def test_pika_external_login_takes_the_certificate_cn(tls, pki):
    c = amqps(tls, pki, client=pki.client[:2], credentials=pika.credentials.ExternalCredentials())
    try:
        round_trip(c, "tls-external")
        users = [x["user"] for x in connection_users(tls) if x.get("protocol", "").startswith("AMQP")]
        assert "certuser" in users
    finally:
        c.close()
    assert tls.wait_log("user=certuser")


def test_external_needs_a_verified_certificate_and_a_user(tls, pki):
    # No client certificate: EXTERNAL is not offered, pika gives up.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqps(tls, pki, credentials=pika.credentials.ExternalCredentials())
    # A verified certificate whose CN is no user: 403.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqps(tls, pki, client=pki.nobody[:2], credentials=pika.credentials.ExternalCredentials())
    assert tls.wait_log("certificate user 'nobody' is not a user")


def test_unsigned_client_certificate_is_refused_in_the_handshake(tls, pki):
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        c = amqps(tls, pki, client=pki.rogue_client[:2], credentials=pika.credentials.ExternalCredentials())
        c.close()
    assert tls.wait_log("AMQPS: TLS handshake failed")
    assert "UnknownIssuer" in tls.log() or "unknown" in tls.log().lower()


class Mqtt:
    """A paho client over TLS (or wss) that records CONNACK and messages."""

    def __init__(self, b, pki, client_id, cert=None, ws=False, **creds):
        self.connack = queue.Queue()
        self.messages = queue.Queue()
        transport = "websockets" if ws else "tcp"
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, transport=transport)
        if ws:
            self.c.ws_set_options(path="/ws")
        self.c.tls_set(
            ca_certs=str(pki.ca_file),
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
        )
        if creds:
            self.c.username_pw_set(creds["user"], creds["password"])
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put(m.payload)
        self.c.connect("localhost", b.wss_port if ws else b.mqtts_port)
        self.c.loop_start()

    def rc(self):
        return self.connack.get(timeout=10)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def mqtt_round_trip(m, topic):
    got = queue.Queue()
    m.c.on_subscribe = lambda c, u, mid, rcs, p: got.put(rcs)
    m.c.subscribe(topic, qos=1)
    got.get(timeout=10)
    m.c.publish(topic, b"mqtt over tls", qos=1).wait_for_publish(10)
    assert m.messages.get(timeout=10) == b"mqtt over tls"


def test_paho_mqtt_tls_with_ssl_cert_login(tls, pki):
    m = Mqtt(tls, pki, "tls-device", cert=pki.client[:2])
    try:
        assert m.rc() == 0
        mqtt_round_trip(m, "tls/cert")
        users = [x["user"] for x in connection_users(tls) if "MQTT" in x.get("protocol", "")]
        assert "certuser" in users
    finally:
        m.close()


def test_paho_mqtt_tls_password_wins_over_certificate(tls, pki):
    m = Mqtt(tls, pki, "tls-pw-device", cert=pki.client[:2], user="rotator", password="wrong")
    try:
        assert m.rc() != 0, "a wrong password is refused even with a good certificate"
    finally:
        m.close()
    m = Mqtt(tls, pki, "tls-nocert", user="guest", password="guest")
    try:
        assert m.rc() == 0
        mqtt_round_trip(m, "tls/pw")
    finally:
        m.close()


def test_mqtt_certificate_of_no_user_is_not_authorised(tls, pki):
    m = Mqtt(tls, pki, "tls-nobody", cert=pki.nobody[:2])
    try:
        assert m.rc() != 0
    finally:
        m.close()
    assert tls.wait_log("certificate user 'nobody' is not a user")


def test_paho_mqtt_over_wss(tls, pki):
    m = Mqtt(tls, pki, "wss-device", cert=pki.client[:2], ws=True)
    try:
        assert m.rc() == 0
        mqtt_round_trip(m, "wss/cert")
    finally:
        m.close()


def s_client(port, *args):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_s_client_tls11_refused_tls13_accepted(tls, pki):
    # SECLEVEL=0 lets this client offer TLS 1.1: the refusal is the server's.
    old = s_client(tls.amqps_port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert old.returncode != 0, old.stdout
    assert "Cipher is (NONE)" in old.stdout, old.stdout  # no session came up
    assert tls.wait_log("AMQPS: TLS handshake failed")
    new = s_client(tls.amqps_port, "-tls1_3", "-CAfile", str(pki.ca_file))
    assert new.returncode == 0, new.stderr
    assert "TLSv1.3" in new.stdout and "Verify return code: 0 (ok)" in new.stdout
    v12 = s_client(tls.mqtts_port, "-tls1_2", "-CAfile", str(pki.ca_file))
    assert v12.returncode == 0 and "TLSv1.2" in v12.stdout


def test_update_secret_rotates_and_a_wrong_one_closes(tls):
    creds = pika.PlainCredentials("rotator", "pw1")
    c = tls.connect(credentials=creds)
    ch = round_trip(c, "rotate-1")
    status, _ = tls.api("/api/users/rotator", method="PUT", body={"password": "pw2", "tags": ""})
    assert status in (201, 204)
    c.update_secret("pw2", "rotation")
    assert tls.wait_log("user 'rotator' updated secret, reason: rotation")
    ch.basic_publish("", "rotate-1", b"after")
    method, _, body = ch.basic_get("rotate-1", auto_ack=True)
    assert body == b"after"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.update_secret("not-the-password", "bad rotation")
    # RabbitMQ's answer (rabbit_reader): 530 NOT_ALLOWED.
    assert e.value.reply_code == 530
    assert "New secret was refused" in e.value.reply_text
    assert tls.wait_log("secret update was refused for user 'rotator'")


def warrenctl(tls, *args):
    return subprocess.run(
        [CTL, "--url", f"https://localhost:{tls.https_port}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_warrenctl_over_https(tls, pki):
    r = warrenctl(tls, "--cacert", str(pki.ca_file), "--format", "json", "list_users")
    assert r.returncode == 0, r.stderr
    assert "rotator" in r.stdout
    r = warrenctl(tls, "list_users")  # the public roots do not know our CA
    assert r.returncode == 69, r.stderr
    r = warrenctl(tls, "--cacert", str(pki.server[1]), "list_users")
    assert r.returncode == 64 and "no PEM certificate" in r.stderr


def test_bad_certificate_file_stops_start_up(tmp_path, pki):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    for cert, key, expect in [
        (tmp_path / "missing.pem", pki.server[1], "missing.pem"),
        (garbage, pki.server[1], "no certificate found"),
        (pki.server[0], pki.client[1], "client.key"),  # not the certificate's key
    ]:
        env = {
            "WARREN_AMQP__BIND": "127.0.0.1:0",
            "WARREN_MQTT__BIND": "127.0.0.1:0",
            "WARREN_MQTT__WS_BIND": "",
            "WARREN_HTTP__BIND": "127.0.0.1:0",
            "WARREN_STORE__DIR": str(tmp_path / "data"),
            "WARREN_TLS__CERT_FILE": str(cert),
            "WARREN_TLS__KEY_FILE": str(key),
            "PATH": "/usr/bin:/bin",
        }
        r = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert expect in r.stderr, r.stderr


def served_serial(port, pki):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with context(pki).wrap_socket(s, server_hostname="localhost") as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True)).serial_number


def test_sighup_reload_new_connections_new_cert_open_ones_stay(tls, pki):
    first = pki.server[2]
    assert served_serial(tls.amqps_port, pki) == first
    open_conn = amqps(tls, pki)
    ch = round_trip(open_conn, "reload-open")
    _, _, second = pki.issue("localhost", "server", server=True)  # same files
    tls.proc.send_signal(signal.SIGHUP)
    assert tls.wait_log("TLS certificates reloaded")
    for port in (tls.amqps_port, tls.mqtts_port, tls.https_port, tls.wss_port):
        assert served_serial(port, pki) == second
    ch.basic_publish("", "reload-open", b"still up")  # the old connection
    method, _, body = ch.basic_get("reload-open", auto_ack=True)
    assert body == b"still up"
    # A broken file on SIGHUP: logged, and the loaded certificate stays.
    good = pki.server[0].read_bytes()
    pki.server[0].write_text("broken")
    try:
        tls.proc.send_signal(signal.SIGHUP)
        assert tls.wait_log("TLS certificates not reloaded")
        assert served_serial(tls.amqps_port, pki) == second
    finally:
        pki.server[0].write_bytes(good)
    open_conn.close()
