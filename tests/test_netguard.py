"""The SSRF guard over TLS: the checked address is connected to, the certificate is checked against the name."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from loopback import jpeg_bytes

from imgnet_build.netguard import AddressRefused, GuardedAdapter, refusal


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for the name `localhost`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    body = jpeg_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(cert_file), body
    server.shutdown()
    server.server_close()


def session(allow_loopback: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", GuardedAdapter(allow_loopback))
    return session


def test_tls_through_the_guard_verifies_the_host_name(tls_server):
    port, ca, body = tls_server
    assert session(True).get(f"https://localhost:{port}/", verify=ca, timeout=5).content == body
    with pytest.raises(requests.exceptions.SSLError, match="certificate is not valid for '127.0.0.1'"):
        session(True).get(f"https://127.0.0.1:{port}/", verify=ca, timeout=5)  # the name, not the address, counts
    with pytest.raises(AddressRefused, match=r"refused: localhost \(127.0.0.1\) is a loopback address"):
        session(False).get(f"https://localhost:{port}/", verify=ca, timeout=5)


@pytest.mark.parametrize("address, reason", [
    ("8.8.8.8", None), ("2001:4860:4860::8888", None),
    ("127.0.0.1", "a loopback address (allow it with --allow-loopback)"), ("10.1.2.3", "a private address"),
    ("192.168.0.1", "a private address"), ("172.16.5.4", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("::ffff:127.0.0.1", "a loopback address (allow it with --allow-loopback)"), ("fc00::1", "a private address"),
    ("0.0.0.0", "an unspecified address"), ("224.0.0.1", "a multicast address"),
    ("100.64.0.1", "not a public address"), ("240.0.0.1", "a private address"),
])
def test_refusal(address, reason):
    assert refusal(address) == reason
