#!/usr/bin/env python3
"""Checks an Oubli receipt independently of the Rust code: the Python standard library plus the
`cryptography` package, following only the formats the docs describe (docs/log-format.md).

    python3 examples/python/check_receipt.py RECEIPT.json VERIFIER_KEY [ERASURE_STATUS.json]
        [--checkpoint NEWER_CHECKPOINT --consistency PROOF.json]
        [--witness WITNESS_KEY ... --quorum K]

or, from Python, `check(receipt_json, verifier_key)` (examples/python/client.py does).

Recomputes the receipt's Ed25519 signature check, the leaf hash, the statement digest in the
leaf (version 2), the counts in the leaf against the statements, the checkpoint's signed-note
signature and the inclusion proof against the checkpoint's root; given a newer checkpoint and
the consistency proof to it (`oubli log consistency --from N --to M`), that the log only grew;
given the holder's erasure status (erasure.json from `oubli erase receipt
--out`), also opens the leaf's commitment with its request id and plan salt and, on the plan's
leaf, recomputes the plan digest from its record ids; given witness keys (`--witness`, repeated)
and a quorum (`--quorum K`, default all), that the receipt's checkpoint carries valid
cosignature/v1 signatures (c2sp.org/tlog-cosignature) by K distinct ones of them. Exit 0 only if
all hold."""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def parse_verifier_key(text):
    name, key_id, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 0x01 and len(raw) == 33, "an Ed25519 verifier key"
    public = raw[1:]
    assert hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4].hex() == key_id, "key id"
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(public)


def parse_witness_key(text):
    """A witness's verifier key: <name>+<hex key id>+base64(0x04 || Ed25519 public key)."""
    name, key_id, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 0x04 and len(raw) == 33, "a cosignature/v1 (type 0x04) witness key"
    public = raw[1:]
    assert hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4].hex() == key_id, "witness key id"
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(public)


def check_cosignatures(note, witnesses, quorum):
    """At least `quorum` distinct witnesses cosigned the note's text: each line by a given
    witness is key id || u64 big-endian time || Ed25519 signature over
    "cosignature/v1\ntime <time>\n" || text."""
    split = note.rindex("\n\n")
    text, signatures = note[: split + 1], note[split + 2 :]
    cosigned = []
    for line in signatures.splitlines():
        signer, b64 = line[2:].split(" ")
        raw = base64.b64decode(b64)
        for name, key_id, public in witnesses:
            if signer == name and raw[:4] == key_id and len(raw) == 76 and f"{name}+{key_id.hex()}" not in cosigned:
                time = int.from_bytes(raw[4:12], "big")
                try:
                    public.verify(raw[12:], b"cosignature/v1\ntime %d\n" % time + text.encode())
                    cosigned.append(f"{name}+{key_id.hex()}")
                except InvalidSignature:
                    pass
    assert len(cosigned) >= quorum, f"witness cosignatures: {len(cosigned)} of {len(witnesses)} cosigned, {quorum} needed"
    print(f"ok  witness cosignatures ({len(cosigned)} of {len(witnesses)}: {', '.join(cosigned)})")


def open_note(note, name, key_id, public):
    split = note.rindex("\n\n")
    text, signatures = note[: split + 1], note[split + 2 :]
    for line in signatures.splitlines():
        assert line.startswith("\u2014 "), "a signature line"
        signer, b64 = line[2:].split(" ")
        raw = base64.b64decode(b64)
        if signer == name and raw[:4] == key_id:
            public.verify(raw[4:], text.encode())  # raises if invalid
            return text
    raise AssertionError("no signature by the log key")


# Bytes of each kind's fields after the commitment (docs/log-format.md).
KIND_FIELDS = {1: 0, 2: 8, 3: 36, 4: 8, 5: 4, 6: 12, 7: 20, 8: 4}
RECEIPT_CONTEXT = b"oubli/receipt/v2\n"
STATEMENTS_DOMAIN = b"oubli/receipt-statements/v1\n"


def canonical_statements(body):
    """The canonical statements: keys in this order, no whitespace, UTF-8, minimal escapes."""
    statements = {
        "done": body["done"],
        "verified": body["verified"],
        "pending": [{"what": p["what"], "due": p["due"]} for p in body["pending"]],
        "not_claimed": body.get("not_claimed", []),
    }
    return json.dumps(statements, separators=(",", ":"), ensure_ascii=False).encode()


def counts_stated(entry):
    """(section, start) pairs: each count of the leaf must begin a line of that section of the
    statements (docs/log-format.md, "Counts in the leaf")."""
    kind, fields = entry[1], entry[42:]
    u32 = lambda at: int.from_bytes(fields[at : at + 4], "big")
    u64 = lambda at: int.from_bytes(fields[at : at + 8], "big")
    if kind == 2:
        return [("done", f"access report issued: {u32(0)} record(s) "),
                ("done", f"{u32(4)} review-band match(es) withheld")]
    if kind == 3:
        return [("done", f"the set of {u32(0)} record(s) to erase was frozen")]
    if kind == 4:
        return [("done", f"{u32(0)} record(s) deleted in one synced write:"),
                ("done", f"the data keys, wrapped under key epoch {u32(4)},")]
    if kind == 5:
        return [("done", f"the key ranges of the {u32(0)} erased record(s)")]
    if kind == 6:
        return [("done", f"a new key-encryption key (epoch {u32(0)}) made; {u64(4)} data key(s) re-wrapped")]
    if kind == 8:
        return [("done", f"a restored backup still held {u32(0)} record(s) of this erasure")]
    if kind == 7:
        return [("verified", f"when the log held {u64(0)} entries, none of the {u64(8)} record(s) held scored at or above ")]
    return []


def check_counts(entry, body):
    for section, start in counts_stated(entry):
        lines = [p["what"] for p in body["pending"]] if section == "pending" else body[section]
        assert any(line.startswith(start) for line in lines), f"counts in the leaf against the statements: no {section} line begins {start!r}"
    print("ok  counts in the leaf against the statements")


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(leaf, index, size, proof):
    """RFC 9162 section 2.1.3.2."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        assert sn != 0, "proof too long"
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof too short"
    return r


def check(receipt_json, verifier_key, witnesses=(), quorum=0):
    """Raises unless every check holds; prints each one as it passes."""
    name, key_id, public = parse_verifier_key(verifier_key)
    receipt = json.loads(receipt_json)
    body = json.loads(receipt["body"])
    # Version 2 is signed after its own context (never a checkpoint's); version 1 alone.
    signed = receipt["body"].encode()
    if body["format"] == "oubli-receipt/v2":
        signed = RECEIPT_CONTEXT + signed
    else:
        assert body["format"] == "oubli-receipt/v1", "a known receipt format"
    public.verify(base64.b64decode(receipt["signature"]), signed)
    print("ok  receipt signature")
    text = open_note(body["checkpoint"], name, key_id, public)
    origin, size, root = text.rstrip("\n").split("\n")
    size, root = int(size), base64.b64decode(root)
    assert origin == body["log_origin"]
    print(f"ok  checkpoint signature ({size} leaves)")
    if witnesses:
        check_cosignatures(body["checkpoint"], witnesses, quorum)
    entry = base64.b64decode(body["entry"])
    # versions 1 and 2; kinds 1-8 (docs/log-format.md); the commitment follows the time.
    assert entry[0] in (1, 2) and entry[1] in KIND_FIELDS, "a known leaf version and kind"
    length = 42 + KIND_FIELDS[entry[1]] + (32 if entry[0] == 2 else 0)
    assert len(entry) == length, "the leaf's length"
    assert entry[10:42].hex() == body["commitment"], "the leaf names the receipt's commitment"
    if entry[0] == 2:
        digest = hashlib.sha256(STATEMENTS_DOMAIN + canonical_statements(body)).digest()
        assert entry[-32:] == digest, "statement digest in the leaf: the statements are not the ones committed"
        print("ok  statement digest in the leaf")
    else:
        print("ok  statement digest in the leaf: none, a version-1 leaf")
    check_counts(entry, body)
    leaf = leaf_hash(entry)
    print(f"ok  leaf hash {leaf.hex()}")
    proof = [base64.b64decode(h) for h in body["inclusion_proof"]]
    assert root_from_inclusion_proof(leaf, body["leaf_index"], size, proof) == root, "inclusion proof"
    print("ok  inclusion proof")
    return entry, (name, key_id, public), (size, root)


def roots_from_consistency_proof(size1, size2, root1, proof):
    """RFC 9162 section 2.1.4.2: the old and new roots the proof implies."""
    assert 0 < size1 <= size2, "consistency needs a non-empty older tree no larger than the newer"
    if size1 == size2:
        assert not proof, "no proof between equal trees"
        return root1, root1
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    assert proof, "consistency proof is empty"
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn != 0, "consistency proof too long"
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    assert sn == 0, "consistency proof too short"
    return fr, sr


def check_consistency(key, tree, newer_note, proof_json):
    """The newer checkpoint is signed by the log key and extends the receipt's tree."""
    size1, root1 = tree
    text = open_note(newer_note, *key)
    _origin, size2, root2 = text.rstrip("\n").split("\n")
    size2, root2 = int(size2), base64.b64decode(root2)
    proof = json.loads(proof_json)
    assert (proof["from_size"], proof["to_size"]) == (size1, size2) or size1 == size2, "the proof's tree sizes"
    hashes = [base64.b64decode(h) for h in proof.get("hashes", [])] if size1 != size2 else []
    try:
        old, new = roots_from_consistency_proof(size1, size2, root1, hashes)
    except AssertionError as e:
        raise AssertionError(f"consistency with the newer checkpoint: {e}") from None
    assert old == root1 and new == root2, "consistency with the newer checkpoint: the roots differ"
    print(f"ok  consistency with the newer checkpoint ({size2} leaves extend {size1})")


def open_leaf(entry, request_id, salt, records=None):
    """The holder's checks: the commitment opened with their id and salt; on an erasure's plan
    leaf (kind 3), the plan digest and count recomputed from their record ids."""
    domain = b"oubli/record-commitment/v1\n" if entry[1] == 1 else b"oubli/request-commitment/v1\n"
    assert hashlib.sha256(domain + salt + request_id).digest() == entry[10:42], "commitment opened with your salt"
    print("ok  commitment opened with your salt")
    if records is not None and entry[1] == 3:
        count, digest = int.from_bytes(entry[42:46], "big"), entry[46:78]
        ids = b"".join(bytes.fromhex(r) for r in sorted(records))
        plan = hashlib.sha256(b"oubli/erasure-plan/v1\n" + salt + request_id + ids).digest()
        assert count == len(records) and plan == digest, "plan digest recomputed from your records"
        print("ok  plan digest recomputed from your records")


def main(argv):
    options, positional, witnesses = {}, [], []
    it = iter(argv)
    for arg in it:
        if arg in ("--checkpoint", "--consistency", "--quorum"):
            options[arg] = next(it)
        elif arg == "--witness":
            witnesses.append(parse_witness_key(next(it)))
        else:
            positional.append(arg)
    quorum = int(options.get("--quorum", len(witnesses)))
    assert not witnesses or 0 < quorum <= len(witnesses), "--quorum is between 1 and the number of --witness keys"
    with open(positional[0]) as f:
        entry, key, tree = check(f.read(), positional[1], witnesses, quorum)
    if len(positional) > 2:
        with open(positional[2]) as f:
            status = json.load(f)
        open_leaf(entry, bytes.fromhex(status["request_id"]), bytes.fromhex(status["plan_salt"]), status["records"])
    if "--checkpoint" in options:
        with open(options["--checkpoint"]) as f:
            note = f.read()
        proof = '{"hashes": []}'
        if "--consistency" in options:
            with open(options["--consistency"]) as f:
                proof = f.read()
        check_consistency(key, tree, note, proof)


if __name__ == "__main__":
    main(sys.argv[1:])
