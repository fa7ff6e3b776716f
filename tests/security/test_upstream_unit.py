"""The upstream config (--upstream-config) and the client side of SASL towards brokers: parsing and refusals,
the librdkafka settings the controller uses, SCRAM's client against RFC 7677's vector and our own server side,
and the SaslHandshake/SaslAuthenticate exchange against hand-made broker answers."""

from __future__ import annotations

import datetime
import json

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from kio.static.primitive import i64Timedelta
from typer.testing import CliRunner

from fedkafka.cli import app
from fedkafka.security.scram import AuthenticationFailed, ScramClient, ScramExchange, make_credential
from fedkafka.security.upstream import UpstreamConfigError, load_upstream_config, sasl_exchange

SECRET = "s3cret-upstream"


def write(tmp_path, doc, mode=0o600):
    path = tmp_path / "upstream.json"
    path.write_text(json.dumps(doc) if isinstance(doc, dict) else doc)
    path.chmod(mode)
    return path


def base(tmp_path, **extra):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    return {"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca), "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "fedkafka", "sasl.password": SECRET} | extra


def test_defaults_and_per_cluster_overrides_in_librdkafka_names(tmp_path):
    doc = base(tmp_path) | {"clusters": {"eu": {"sasl.username": "eu-user", "sasl.password": "other"},
                                         "lab": {"security.protocol": "PLAINTEXT"}}}
    config = load_upstream_config(write(tmp_path, doc))
    assert config.for_cluster("us").librdkafka() == {
        "security.protocol": "SASL_SSL", "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tmp_path / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fedkafka", "sasl.password": SECRET}
    eu = config.for_cluster("eu")
    assert (eu.username, eu.password, eu.mechanism, eu.ssl_ca) == ("eu-user", "other", "SCRAM-SHA-512",
                                                                    tmp_path / "ca.pem")
    assert config.for_cluster("lab").librdkafka() == {}
    assert SECRET not in repr(config) and SECRET not in config.for_cluster("us").describe()


@pytest.mark.parametrize(("doc", "message"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}, "needs sasl.username and sasl.password"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "u", "sasl.password": "p"},
     "sasl.mechanism must be one of"),
    ({"security.protocol": "TLS"}, "security.protocol must be one of"),
    ({"sasl.pasword": SECRET}, "unknown property 'sasl.pasword'"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, "is not a readable file"),
    ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "maybe"}, "https or none"),
    ({"clusters": ["eu"]}, "'clusters' must map cluster ids"),
    ({"sasl.port": 1}, "unknown property"),
])
def test_a_wrong_config_is_refused_with_a_message_that_holds_no_secret(tmp_path, doc, message):
    with pytest.raises(UpstreamConfigError, match=message) as refused:
        load_upstream_config(write(tmp_path, doc))
    assert SECRET not in str(refused.value)


def test_a_password_in_a_file_others_may_read_is_refused(tmp_path):
    with pytest.raises(UpstreamConfigError, match=r"readable by others.*chmod 600"):
        load_upstream_config(write(tmp_path, base(tmp_path), mode=0o644))
    assert load_upstream_config(write(tmp_path, {"security.protocol": "PLAINTEXT"}, mode=0o644))


def test_not_json_is_refused(tmp_path):
    with pytest.raises(UpstreamConfigError, match="not JSON"):
        load_upstream_config(write(tmp_path, "security.protocol=SASL_SSL"))


def test_a_file_nested_deeper_than_the_json_parser_is_refused_as_not_json(tmp_path):
    """The service's start turns an UpstreamConfigError into its message; a RecursionError was a traceback."""
    path = tmp_path / "upstream.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    path.chmod(0o600)
    with pytest.raises(UpstreamConfigError, match="not JSON: nested too deeply"):
        load_upstream_config(path)


def test_a_file_not_in_utf8_is_refused_quoting_none_of_its_bytes(tmp_path):
    path = tmp_path / "upstream.json"
    path.write_bytes(b'{"sasl.password": "Rot\xe4ted"}')
    path.chmod(0o600)
    with pytest.raises(UpstreamConfigError) as refused:
        load_upstream_config(path)
    assert str(refused.value) == f"the upstream config {path} is not UTF-8 text"


@pytest.mark.parametrize("service", [["proxy", "--role", "both", "--listen", "127.0.0.1:0", "--view-file", "v.json"],
                                     ["controller", "--listen", "127.0.0.1:0", "--token-file", "t"]])
def test_services_refuse_a_readable_config_before_starting(tmp_path, monkeypatch, service):
    (tmp_path / "v.json").write_text('{"version": 1}')
    (tmp_path / "t").write_text("token")
    path = write(tmp_path, base(tmp_path), mode=0o640)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, [*service, "--upstream-config", str(path)])
    assert res.exit_code == 2 and "readable by others" in res.stderr, res.output[-2000:]
    assert SECRET not in res.output


def test_scram_client_matches_rfc_7677():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(AuthenticationFailed, match="signature does not match"):
        client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def test_scram_client_refuses_a_server_that_changed_the_nonce_or_weakened_iterations():
    client = ScramClient("SCRAM-SHA-512", "u", "p", nonce="abc")
    client.first()
    with pytest.raises(AuthenticationFailed):
        client.final(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(AuthenticationFailed):
        client.final(b"r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1")
    with pytest.raises(AuthenticationFailed, match="2147483647 iterations"):  # would stall the event loop
        client.final(b"r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2147483647")
    with pytest.raises(AuthenticationFailed, match="foreign nonce"):  # the server added nothing of its own
        client.final(b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def _security(tmp_path, mechanism="SCRAM-SHA-512", password=SECRET):
    doc = base(tmp_path, **{"sasl.mechanism": mechanism, "sasl.password": password})
    return load_upstream_config(write(tmp_path, doc)).default


def _run(exchange, answer):
    """Drive the exchange with `answer(request) -> response`; returns the session lifetime."""
    request = next(exchange)
    try:
        while True:
            request = exchange.send(answer(request))
    except StopIteration as done:
        return done.value


def _broker(password: str, mechanism: str, lifetime_ms: int = 0):
    """A broker's SASL answers, its SCRAM side being fedkafka's own server implementation."""
    cred = make_credential("fedkafka", mechanism, password)
    server = ScramExchange(mechanism, lambda user: cred if user == "fedkafka" else None, b"k")
    turn = iter(("handshake", "first", "final"))
    lifetime = i64Timedelta(datetime.timedelta(milliseconds=lifetime_ms))

    def answer(request):
        step = next(turn)
        if step == "handshake":
            return SaslHandshakeResponse(error_code=ErrorCode.none, mechanisms=(mechanism,))
        try:
            token = server.first(request.auth_bytes) if step == "first" else server.final(request.auth_bytes)
        except AuthenticationFailed as e:
            return SaslAuthenticateResponse(error_code=ErrorCode.sasl_authentication_failed, error_message=str(e),
                                            auth_bytes=b"", session_lifetime=lifetime)
        return SaslAuthenticateResponse(error_code=ErrorCode.none, error_message=None, auth_bytes=token,
                                        session_lifetime=lifetime)
    return answer


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_exchange_logs_in_and_returns_the_session_lifetime(tmp_path, mechanism):
    assert _run(sasl_exchange(_security(tmp_path, mechanism)), _broker(SECRET, mechanism, 60_000)) == 60_000


def test_a_wrong_password_fails_with_the_brokers_message(tmp_path):
    with pytest.raises(AuthenticationFailed, match="invalid credentials") as failed:
        _run(sasl_exchange(_security(tmp_path, password="wrong")), _broker(SECRET, "SCRAM-SHA-512"))
    assert "wrong" not in str(failed.value) and SECRET not in str(failed.value)


def test_a_mechanism_the_broker_does_not_enable_is_named(tmp_path):
    def answer(_request):
        return SaslHandshakeResponse(error_code=ErrorCode.unsupported_sasl_mechanism, mechanisms=("PLAIN",))
    with pytest.raises(AuthenticationFailed, match="does not enable SCRAM-SHA-512 \\(it offers PLAIN\\)"):
        _run(sasl_exchange(_security(tmp_path)), answer)


def test_plain_sends_one_token(tmp_path):
    sent = []

    def answer(request):
        sent.append(request)
        if len(sent) == 1:
            return SaslHandshakeResponse(error_code=ErrorCode.none, mechanisms=("PLAIN",))
        return SaslAuthenticateResponse(error_code=ErrorCode.none, error_message=None, auth_bytes=b"",
                                        session_lifetime=i64Timedelta(datetime.timedelta(0)))
    assert _run(sasl_exchange(_security(tmp_path, "PLAIN")), answer) == 0
    assert sent[1].auth_bytes == f"\0fedkafka\0{SECRET}".encode()
