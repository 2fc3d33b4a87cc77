"""A validating admission webhook that holds one request, to open a window for a fault.

The operator creates a run's Job and then its results ConfigMap; a worker killed between the two
is the fault to test. The window is milliseconds long, so the test widens it the way a slow API
server would: the apiserver sends the first matching ConfigMap CREATE to this webhook, which holds
it until the test has killed the worker, then refuses it. Later requests pass at once. The webhook
listens where the apiserver reaches this machine (conftest.node_address: on the local cluster the
node is this machine, on kind the apiserver runs in the node container), with a serving certificate
made on the spot for that address.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from tests.conftest import node_address

HOLD_SECONDS = 25  # below the webhook's 30 s timeout, the longest Kubernetes allows


class Hold:
    """The held request: `held` is set when it arrives, `release()` lets the webhook answer."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self._released = threading.Event()
        self._taken = threading.Lock()
        self.taken = False

    def take(self) -> bool:
        with self._taken:
            first, self.taken = not self.taken, True
            return first

    def wait(self) -> None:
        self._released.wait(HOLD_SECONDS)

    def release(self) -> None:
        self._released.set()


@contextmanager
def holding_first_configmap(
    api_client: client.ApiClient, namespace: str, labels: dict[str, str]
) -> Iterator[Hold]:
    """Hold the first ConfigMap CREATE in `namespace` whose labels include `labels`."""
    hold = Hold()
    address = node_address(api_client)
    cert, key = _self_signed(address)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server = ThreadingHTTPServer((address, 0), _handler(hold))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        admission = client.AdmissionregistrationV1Api(api_client)
        name = f"kubedbt-fault-hold-{namespace}"
        admission.create_validating_webhook_configuration(
            _configuration(name, f"{address}:{server.server_address[1]}", cert, namespace, labels)
        )
        try:
            yield hold
        finally:
            hold.release()
            admission.delete_validating_webhook_configuration(name)
            server.shutdown()
            server.server_close()


def _handler(hold: Hold) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            allowed = True
            if hold.take():
                hold.held.set()
                hold.wait()
                allowed = False  # the caller is dead by now; nothing must be created for it
            response = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": allowed,
                    "status": {"message": "held by a kubedbt fault test"},
                },
            }
            body = json.dumps(response).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _configuration(
    name: str, host: str, cert: bytes, namespace: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "hold.faults.kubedbt.io",
                "clientConfig": {
                    "url": f"https://{host}/validate",
                    "caBundle": base64.b64encode(cert).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": labels},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 30,
            }
        ],
    }


def _self_signed(address: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
