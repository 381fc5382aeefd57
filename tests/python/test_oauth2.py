"""OAuth 2 token login, as RabbitMQ's rabbitmq_auth_backend_oauth2: a JWT as
the password (pika, paho-mqtt, HTTP Basic and Bearer, warrenctl), scopes as
permissions, tags, refusals (signature, expiry, audience, vhost), the close
at expiry (AMQP 320, MQTT 5 DISCONNECT 0xA0) and update-secret with a fresh
token. Keys are generated here; none is checked in."""
import base64
import json
import queue
import subprocess
import time
import urllib.error
import urllib.request

import jwt
import paho.mqtt.client as mqtt
import pika
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from conftest import BIN, CTL, Broker

VHOST = "tokens"


def pem_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Keys:
    """The broker's signing keys: two PEM files (rsa1 is the default key)
    and a JWKS file with one RSA and one EC key, plus a key it does not know."""

    def __init__(self, d):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.jwks_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (d / "rsa1.pem").write_bytes(pem_public(self.rsa))
        (d / "ec1.pem").write_bytes(pem_public(self.ec))
        jwks = []
        for kid, key, alg in [
            ("jwks-rsa", self.jwks_rsa, RSAAlgorithm),
            ("jwks-ec", self.jwks_ec, ECAlgorithm),
        ]:
            jwk = json.loads(alg.to_jwk(key.public_key()))
            jwk["kid"] = kid
            jwks.append(jwk)
        (d / "keys.jwks").write_text(json.dumps({"keys": jwks}))
        self.env = {
            "WARREN_AUTH_OAUTH2__SIGNING_KEYS__RSA1": str(d / "rsa1.pem"),
            "WARREN_AUTH_OAUTH2__SIGNING_KEYS__EC1": str(d / "ec1.pem"),
            "WARREN_AUTH_OAUTH2__JWKS_FILE": str(d / "keys.jwks"),
            "WARREN_AUTH_OAUTH2__DEFAULT_KEY": "rsa1",
        }

    def token(self, scopes, kid="rsa1", key=None, alg="RS256", exp_in=300, sub="tok-user", **claims):
        key = key or {"rsa1": self.rsa, "ec1": self.ec, "jwks-rsa": self.jwks_rsa,
                      "jwks-ec": self.jwks_ec}[kid]
        body = {"sub": sub, "aud": ["rabbitmq"], "exp": int(time.time()) + exp_in,
                "scope": " ".join(scopes)}
        body.update(claims)
        headers = {"kid": kid} if kid else {}
        return jwt.encode(body, key, algorithm=alg, headers=headers)


def full(vhost="tokens", names="tq-*"):
    """Every right on `names` in `vhost`, and publishing to the default exchange."""
    return [f"rabbitmq.configure:{vhost}/{names}", f"rabbitmq.write:{vhost}/{names}",
            f"rabbitmq.read:{vhost}/{names}", f"rabbitmq.write:{vhost}/amq.default"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def b(tmp_path_factory, keys):
    broker = Broker(tmp_path_factory.mktemp("warren"), extra_env=keys.env)
    status, _ = broker.api(f"/api/vhosts/{VHOST}", method="PUT", body={})
    assert status in (201, 204)
    status, _ = broker.api(f"/api/permissions/{VHOST}/guest", method="PUT",
                           body={"configure": ".*", "write": ".*", "read": ".*"})
    assert status in (201, 204)
    yield broker
    broker.stop()


def login(b, token, user="", vhost=VHOST):
    return b.connect(virtual_host=vhost, credentials=pika.PlainCredentials(user, token))


def refused(code, op):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        op()
    assert e.value.reply_code == code, e.value.reply_text
    return e.value.reply_text


def admin_channel(b):
    c = b.connect(virtual_host=VHOST)
    return c, c.channel()


def test_pika_token_with_full_scopes_works_and_outside_them_is_403(b, keys):
    c = login(b, keys.token(full()))
    try:
        ch = c.channel()
        ch.confirm_delivery()
        ch.queue_declare("tq-full")
        ch.basic_publish("", "tq-full", b"by token")
        _, _, body = ch.basic_get("tq-full", auto_ack=True)
        assert body == b"by token"
        text = refused(403, lambda: ch.queue_declare("not-mine"))
        assert text == ("ACCESS_REFUSED - access to queue 'not-mine' in vhost 'tokens' "
                        "refused for user 'tok-user'")
    finally:
        if c.is_open:
            c.close()
    # The broker deregisters a connection as its task ends, just after it
    # sends close-ok: wait for that (bounded) rather than race it.
    deadline = time.time() + 10
    while True:
        users = [x["user"] for x in b.api("/api/connections")[1]]
        if "tok-user" not in users or time.time() > deadline:
            break
        time.sleep(0.05)
    assert "tok-user" not in users, "closed connections leave the listing"


def test_each_scope_type_grants_only_its_right(b, keys):
    admin, ach = admin_channel(b)
    ach.exchange_declare("tq-x", "fanout")
    ach.queue_declare("tq-held")
    ach.queue_bind("tq-held", "tq-x")
    admin.close()
    # configure only: may declare, may not read.
    c = login(b, keys.token(["rabbitmq.configure:tokens/tq-*"]))
    ch = c.channel()
    ch.queue_declare("tq-conf")
    refused(403, lambda: ch.basic_get("tq-conf"))
    c.close()
    # write only: may publish to tq-x, may not declare.
    c = login(b, keys.token(["rabbitmq.write:tokens/tq-*"]))
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("tq-x", "", b"written")
    refused(403, lambda: ch.queue_declare("tq-new"))
    c.close()
    # read only: may get, may not publish.
    c = login(b, keys.token(["rabbitmq.read:tokens/tq-*"]))
    ch = c.channel()
    _, _, body = ch.basic_get("tq-held", auto_ack=True)
    assert body == b"written"
    ch.confirm_delivery()
    refused(403, lambda: ch.basic_publish("tq-x", "", b"no"))
    c.close()


def test_token_without_a_scope_for_the_vhost_is_refused(b, keys):
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker,
                        pika.exceptions.ProbableAccessDeniedError)):
        login(b, keys.token(full()), vhost="/")
    assert b.wait_log("access to vhost refused: no token scope names it")


@pytest.mark.parametrize("kid,alg", [("rsa1", "RS256"), ("ec1", "ES256"),
                                     ("jwks-rsa", "RS256"), ("jwks-ec", "ES256"),
                                     (None, "RS256")])
def test_rs256_es256_pem_jwks_and_default_key(b, keys, kid, alg):
    key = keys.rsa if kid is None else None  # no kid: the default key, rsa1
    c = login(b, keys.token(full(), kid=kid, key=key, alg=alg, sub=f"k-{kid}"))
    try:
        ch = c.channel()
        ch.queue_declare(f"tq-{kid}")
        ch.basic_publish("", f"tq-{kid}", alg.encode())
        _, _, body = ch.basic_get(f"tq-{kid}", auto_ack=True)
        assert body == alg.encode()
    finally:
        c.close()


@pytest.mark.parametrize("why,make,log", [
    ("wrong signature", lambda k: k.token(full(), kid="rsa1", key=k.stranger), "signature is invalid"),
    ("expired", lambda k: k.token(full(), exp_in=-30), "token has expired"),
    ("wrong audience", lambda k: k.token(full(), aud="someone-else"), "audience does not contain 'rabbitmq'"),
    ("unknown kid", lambda k: k.token(full(), kid="nope", key=k.rsa), "no signing key with id 'nope'"),
    ("not yet valid", lambda k: k.token(full(), nbf=int(time.time()) + 120), "not valid yet"),
])
def test_bad_tokens_are_refused_at_login(b, keys, why, make, log):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        login(b, make(keys))
    assert "ACCESS_REFUSED" in str(e.value), why
    assert b.wait_log(log), why


def test_internal_users_still_log_in(b):
    c = b.connect(virtual_host=VHOST)
    assert c.is_open
    c.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        b.connect(credentials=pika.PlainCredentials("guest", "wrong"))


def http(b, path, authorization):
    req = urllib.request.Request(f"http://127.0.0.1:{b.http_port}{path}")
    req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_http_bearer_and_basic_with_administrator_tag(b, keys):
    admin = keys.token(["rabbitmq.tag:administrator"], sub="ops")
    status, users = http(b, "/api/users", f"Bearer {admin}")
    assert status == 200 and any(u["name"] == "guest" for u in users)
    assert http(b, "/api/users", basic("anyone", admin))[0] == 200
    assert http(b, "/api/users", basic("", admin))[0] == 200
    monitor = keys.token(["rabbitmq.tag:monitoring"], sub="watcher")
    assert http(b, "/api/overview", f"Bearer {monitor}")[0] == 200
    assert http(b, "/api/users", f"Bearer {monitor}")[0] == 403, "monitoring is not administrator"
    plain = keys.token(full(), sub="app")
    assert http(b, "/api/overview", f"Bearer {plain}")[0] == 403, "no management tag"
    assert http(b, "/api/overview", "Bearer not.a.token")[0] == 401
    expired = keys.token(["rabbitmq.tag:administrator"], exp_in=-5)
    assert http(b, "/api/overview", f"Bearer {expired}")[0] == 401


def test_management_tag_acts_within_token_scopes(b, keys):
    mgr = keys.token(["rabbitmq.tag:management", "rabbitmq.read:tokens/tq-*",
                      "rabbitmq.configure:tokens/tq-*"], sub="mgr")
    status, _ = http(b, "/api/queues/tokens/tq-full", f"Bearer {mgr}")
    assert status == 200


def test_warrenctl_with_a_token_as_password(b, keys):
    admin = keys.token(["rabbitmq.tag:administrator"], sub="ctl")
    r = subprocess.run([CTL, "--url", f"http://127.0.0.1:{b.http_port}", "--format", "json",
                        "list_vhosts"], capture_output=True, text=True, timeout=30,
                       env={"WARRENCTL_USER": "x", "WARRENCTL_PASSWORD": admin, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert VHOST in r.stdout
    bad = keys.token(["rabbitmq.tag:administrator"], key=keys.stranger)
    r = subprocess.run([CTL, "--url", f"http://127.0.0.1:{b.http_port}", "list_vhosts"],
                       capture_output=True, text=True, timeout=30,
                       env={"WARRENCTL_PASSWORD": bad, "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0


MQTT_SCOPES = ["rabbitmq.configure:%2F/mqtt-subscription-*", "rabbitmq.write:%2F/mqtt-subscription-*",
               "rabbitmq.read:%2F/amq.topic", "rabbitmq.write:%2F/amq.topic"]


class Paho:
    def __init__(self, b, client_id, password, v5=False):
        self.connack = queue.Queue()
        self.messages = queue.Queue()
        self.disconnects = queue.Queue()
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        self.c.username_pw_set("", password)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put(m.payload)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.c.connect("127.0.0.1", b.mqtt_port)
        self.c.loop_start()

    def rc(self):
        return self.connack.get(timeout=10)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_paho_mqtt_login_with_token_and_refusal(b, keys):
    m = Paho(b, "tok-device", keys.token(MQTT_SCOPES, sub="device-1"))
    try:
        assert m.rc() == 0
        subscribed = queue.Queue()
        m.c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(rcs)
        m.c.subscribe("tok/t", qos=1)
        assert not subscribed.get(timeout=10)[0].is_failure
        m.c.publish("tok/t", b"mqtt token", qos=1).wait_for_publish(10)
        assert m.messages.get(timeout=10) == b"mqtt token"
        users = [x["user"] for x in b.api("/api/connections")[1] if "MQTT" in x.get("protocol", "")]
        assert "device-1" in users
    finally:
        m.close()
    m = Paho(b, "tok-bad", keys.token(MQTT_SCOPES, key=keys.stranger))
    try:
        assert m.rc() != 0, "a token with a bad signature is refused"
    finally:
        m.close()
    assert b.wait_log("MQTT authentication failed")
    m = Paho(b, "tok-elsewhere", keys.token(full()))  # scopes only for vhost 'tokens'
    try:
        assert m.rc() != 0, "no scope names vhost '/'"
    finally:
        m.close()


def test_mqtt5_connection_is_disconnected_when_its_token_expires(b, keys):
    m = Paho(b, "tok-expiring", keys.token(MQTT_SCOPES, exp_in=4, sub="short"), v5=True)
    try:
        assert m.rc() == 0
        rc = m.disconnects.get(timeout=20)
        assert rc.value == 0xA0, rc  # Maximum connect time
    finally:
        m.c.loop_stop()
    assert b.wait_log("credential has expired")


def wait_closed(c, timeout):
    """Serve the connection until the broker closes it (or the timeout passes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c.process_data_events(time_limit=0.2)
        except pika.exceptions.ConnectionClosedByBroker as e:
            return e
    return None


def test_amqp_connection_is_closed_320_when_its_token_expires(b, keys):
    c = login(b, keys.token(full(), exp_in=4, sub="short-amqp"))
    ch = c.channel()
    ch.queue_declare("tq-exp")
    e = wait_closed(c, 20)
    assert e is not None, "the connection outlived its token"
    assert e.reply_code == 320
    assert e.reply_text == "CONNECTION_FORCED - credential expired"


def test_update_secret_with_a_fresh_token_keeps_the_connection(b, keys):
    expires = time.time() + 5  # the first token's exp is at most this
    first = keys.token(full(), exp_in=5, sub="rotating")
    c = login(b, first)
    ch = c.channel()
    ch.queue_declare("tq-rot")
    # The fresh token also grants a queue the first did not.
    fresh = keys.token(full() + ["rabbitmq.configure:tokens/extra-*"], exp_in=300, sub="rotating")
    c.update_secret(fresh, "refresh")
    assert b.wait_log("user 'rotating' updated secret, reason: refresh")
    ch.queue_declare("extra-1")
    # Past the first token's expiry the connection is still served.
    assert wait_closed(c, expires + 2 - time.time()) is None
    ch.basic_publish("", "tq-rot", b"still here")
    _, _, body = ch.basic_get("tq-rot", auto_ack=True)
    assert body == b"still here"
    # A token for another user is refused (RabbitMQ: no username change).
    c2 = login(b, keys.token(full(), sub="mover"))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c2.update_secret(keys.token(full("elsewhere", "*"), sub="mover"), "other vhost")
    assert e.value.reply_code == 530
    assert "access to vhost 'tokens' refused for user 'mover'" in e.value.reply_text
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.update_secret(keys.token(full(), sub="somebody-else"), "swap")
    assert e.value.reply_code == 530
    assert b.wait_log("Not allowed to change username on refreshed token")


def test_oauth2_only_refuses_internal_users(tmp_path, keys):
    env = dict(keys.env, WARREN_AUTH_OAUTH2__INTERNAL_USERS="false")
    only = Broker(tmp_path, extra_env=env)
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            only.connect()
        c = login(only, keys.token(full("%2F", "*")), vhost="/")
        assert c.is_open
        c.close()
    finally:
        only.stop()


def test_unusable_key_files_stop_start_up(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    for var, value, expect in [
        ("SIGNING_KEYS__K", str(bad), "not an RSA or EC public key"),
        ("SIGNING_KEYS__K", str(tmp_path / "missing.pem"), "missing.pem"),
        ("JWKS_FILE", str(bad), "bad.pem"),
    ]:
        env = {
            "WARREN_AMQP__BIND": "127.0.0.1:0",
            "WARREN_MQTT__BIND": "127.0.0.1:0",
            "WARREN_MQTT__WS_BIND": "",
            "WARREN_HTTP__BIND": "127.0.0.1:0",
            "WARREN_STORE__DIR": str(tmp_path / "data"),
            f"WARREN_AUTH_OAUTH2__{var}": value,
            "PATH": "/usr/bin:/bin",
        }
        r = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert "auth_oauth2 configuration" in r.stderr and expect in r.stderr, r.stderr


def test_scope_variables_vhost_and_claims(b, keys):
    # RabbitMQ's {vhost} and {claim} variables in scopes.
    token = keys.token(["rabbitmq.configure:{vhost}/own-{client_id}", "rabbitmq.read:{vhost}/own-*"],
                       sub="var-user", client_id="c42")
    c = login(b, token)
    try:
        ch = c.channel()
        ch.queue_declare("own-c42")
        assert ch.basic_get("own-c42", auto_ack=True)[0] is None  # read granted: empty queue
        refused(403, lambda: ch.queue_declare("own-c43"))
    finally:
        if c.is_open:
            c.close()
