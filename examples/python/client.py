#!/usr/bin/env python3
"""Oubli from Python: enrol, search, ask what is held (GDPR Art. 15), check the receipt.

Nothing about a face is answered before the sender's identity is established: the person's
selfie is signed, for this one request, by a capture application the server trusts (its key
from `oubli capture-keys add --generate`); this example plays that application.

    make python-example                      # against an embedded server, start to end
    PYTHONPATH=target/python/deps:target/python/stubs \\
      python3 examples/python/client.py --server 127.0.0.1:50051 --token-file oubli-keys/local.token

Against a server started with --tls-cert/--tls-key, add --ca-cert FILE (the CA certificate, PEM,
that signed the server's): the channel is then TLS, the certificate checked for --server's host.

The gRPC stubs are generated from proto/ by grpcio-tools (`make python-deps` writes them to
target/python/stubs). The receipt is checked with examples/python/check_receipt.py: the standard
library and the `cryptography` package, not Oubli's code. Every face here is synthetic."""
import argparse
import hashlib
import math
import struct
import tomllib
import random
import sys
import time
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from oubli.v1 import rights_pb2, rights_pb2_grpc, templates_pb2, templates_pb2_grpc
from oubli.v1 import transparency_pb2, transparency_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_receipt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

DIMENSION = 512


def unit(values):
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def face(rng, base=None, noise=0.0):
    """A random template, or a new capture of `base` (the same face, another photo)."""
    if base is None:
        return unit([rng.gauss(0, 1) for _ in range(DIMENSION)])
    return unit([b + rng.gauss(0, noise) for b in base])


def enrol_request(values, i):
    collected = Timestamp(seconds=1_700_000_000 + 86_400 * i)
    return templates_pb2.EnrollRequest(
        embedding=templates_pb2.Embedding(values=values),
        provenance=templates_pb2.Provenance(
            source_uri=f"https://photos.example.org/python/{i}.jpg",
            collected_at=collected,
            source_kind=templates_pb2.SOURCE_KIND_CONSENTED_ENROLMENT,
            legal_basis=templates_pb2.LEGAL_BASIS_CONSENT,
            jurisdiction="FR",
        ),
        idempotency_key=f"python-example-{i}",
    )


def field(text):
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def capture(rights, key_file, kind, contact, jurisdiction, include_templates, never_enrol_again, probes):
    """What a trusted capture application does (proto/oubli/v1/rights.proto, message Capture)."""
    key = tomllib.loads(Path(key_file).read_text())
    signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["secret_key"]))
    challenge = rights.BeginCapture(rights_pb2.BeginCaptureRequest()).challenge
    terms = hashlib.sha256(b"oubli/capture-request/v1\n" + field(kind) + field(contact) + field(jurisdiction)
                           + bytes([int(include_templates), int(never_enrol_again)])).digest()
    signatures = []
    for values in probes:
        # The values as sent: float32, little-endian.
        template = b"".join(struct.pack("<f", v) for v in values)
        signatures.append(signer.sign(hashlib.sha256(b"oubli/capture/v1\n" + challenge + terms + template).digest()))
    return rights_pb2.Capture(challenge=challenge, key=key["name"], signatures=signatures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--token-file", required=True, help="an operator's bearer token")
    parser.add_argument("--ca-cert", help="connect over TLS, trusting this CA certificate (PEM)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--capture-key", required=True,
                        help="a trusted capture application's key file (oubli capture-keys add --generate)")
    args = parser.parse_args()
    token = Path(args.token_file).read_text().strip()
    operator = [("authorization", f"Bearer {token}")]
    if args.ca_cert:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(args.ca_cert).read_bytes())
        channel = grpc.secure_channel(args.server, credentials)
    else:
        channel = grpc.insecure_channel(args.server)
    templates = templates_pb2_grpc.TemplatesServiceStub(channel)
    rights = rights_pb2_grpc.RightsServiceStub(channel)
    log = transparency_pb2_grpc.TransparencyServiceStub(channel)

    # 1. Enrol: one person photographed three times, among 17 others (as an operator).
    rng = random.Random(args.seed)
    person = face(rng)
    faces = [face(rng, person, 0.03) for _ in range(3)] + [face(rng) for _ in range(17)]
    ids = [templates.Enroll(enrol_request(v, i), metadata=operator).record_id for i, v in enumerate(faces)]
    print(f"enrolled {len(ids)} records")

    # 2. Search with a new photo of the person.
    selfie = face(rng, person, 0.03)
    found = templates.Search(templates_pb2.SearchRequest(probe=templates_pb2.Embedding(values=selfie), k=5),
                             metadata=operator)
    print(f"search ({found.index} index): best scores " + ", ".join(f"{h.score:.3f}" for h in found.hits))

    # 3. The person asks what is held about them: no account, no token, a selfie signed by the
    #    trusted capture application (a photo alone would be answered with verifying_identity).
    signed = capture(rights, args.capture_key, "access", "person@example.org", "FR", False, False, [selfie])
    submitted = rights.SubmitAccessRequest(rights_pb2.SubmitAccessRequestRequest(
        probes=[templates_pb2.Embedding(values=selfie)], contact="person@example.org", jurisdiction_claim="FR",
        capture=signed))
    request = (submitted.request_id, submitted.request_secret)
    deadline = time.monotonic() + 60
    while True:
        status = rights.GetRequest(rights_pb2.GetRequestRequest(
            request_id=request[0], request_secret=request[1], wait_seconds=10)).status
        if status.state == "completed" or time.monotonic() > deadline:
            break
    print(f"access request {status.request_id}: {status.state}, {status.matched} records disclosed")
    report = rights.GetAccessReport(rights_pb2.GetAccessReportRequest(
        request_id=request[0], request_secret=request[1]))
    print(f"report: {len(report.report_json)} bytes of JSON (every source, every recipient)")

    # 4. Check the answer's receipt offline, with the log's key.
    key = log.GetVerifierKey(transparency_pb2.GetVerifierKeyRequest()).verifier_key
    check_receipt.check(report.receipt_json, key)
    print("receipt: every check passed")
    return 0 if status.state == "completed" and status.matched == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
