"""The auditors' verifier over a log built by the service's own core (streams.security.audit_log.AuditLog): an
untouched log passes; each tampering the issue names is reported with where and why, and a non-zero exit."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.models import AuditCheckpoint, AuditLogEntry
from contracts.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_RECORDS
from domain.merkle import tree_root
from streams.kafka.ingress import Origin, Rejected
from streams.security import verify
from streams.security.audit_log import AuditLog, Leaf
from streams.security.signing import SoftwareSigner, checkpoint_signed_by, load_public_key, sign_checkpoint

LOG_ID = "nexus-audit-test"
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
SIGNER = SoftwareSigner.generate("nexus-signing-v1")
OTHER = SoftwareSigner.generate("nexus-signing-v1")  # same name, another key


def record_bytes(i: int, kaus: str = "", full: bool = False) -> tuple[bytes, bytes]:
    """Sparse (defaults left out, spaces), or `full` as the platform's producers write records (every field)."""
    tx = f"tx-{i:04d}"
    value = {
        "auditId": f"AUDIT:{tx}:completed",
        "timestamp": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "transactionId": tx,
        "action": "BRIDGE_SETTLEMENT_COMPLETED",
        "actor": {"userId": f"user-{i % 7}"},
        "details": {"kausAmount": kaus or f"{i}.250000", "fiatAmount": f"{i}.25", "currency": "USD"},
        "signature": None,
        "blockchainRef": None,
    }
    if full:
        return tx.encode(), AUDIT_RECORDS.encode(AUDIT_RECORDS.decode(json.dumps(value)))
    return tx.encode(), json.dumps(value).encode()


def build_log(
    count: int, every: int, signer: SoftwareSigner = SIGNER, edited: int | None = None, full: bool = False
) -> tuple[list[AuditLogEntry], list[AuditCheckpoint]]:
    """`count` records through the service core, a checkpoint each `every` leaves and one at the end (record
    `edited` with another amount)."""
    log = AuditLog(LOG_ID)
    entries: list[AuditLogEntry] = []
    checkpoints: list[AuditCheckpoint] = []
    for i in range(count):
        key, value = record_bytes(i, "1000000.000000" if i == edited else "", full)
        assert isinstance(log.offer(key, value, Origin("audit.records", 0, i)), Leaf)
        if len(log.pending) == every or i == count - 1:
            batch = log.batch(signer, T0 + timedelta(seconds=i))
            assert batch.checkpoint is not None
            checkpoints.append(batch.checkpoint)
            entries.extend(batch.entries)
            log.committed(batch)
    return entries, checkpoints


def write(directory: Path, entries: list[bytes], checkpoints: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / verify.LOG_FILE).write_bytes(b"".join(e + b"\n" for e in entries))
    (directory / verify.CHECKPOINTS_FILE).write_bytes(b"".join(c + b"\n" for c in checkpoints))
    return directory


def encoded(entries: list[AuditLogEntry], checkpoints: list[AuditCheckpoint]) -> tuple[list[bytes], list[bytes]]:
    return [AUDIT_LOG.encode(e) for e in entries], [AUDIT_CHECKPOINTS.encode(c) for c in checkpoints]


@pytest.fixture(scope="module", params=["sparse", "full"])
def log20(request: pytest.FixtureRequest) -> tuple[list[bytes], list[bytes]]:
    """20 records, a checkpoint every 5: written sparse, or in full (the verifier's fast path)."""
    return encoded(*build_log(20, 5, full=request.param == "full"))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    path.write_text(SIGNER.public_key_pem())
    return path


def run(directory: Path, key_file: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = verify.main(["check", "--dir", str(directory), "--public-key", str(key_file), *extra])
    return status, capsys.readouterr().out


def check(directory: Path, *, kept: list[Path] | None = None) -> verify.Report:
    request = verify.CheckRequest(directory, [load_public_key(SIGNER.public_key_pem())], kept or [])
    return verify.check_log(request, LOG_ID)


def findings(report: verify.Report) -> list[str]:
    return [str(f) for f in report.findings]


# --------------------------------------------------------------------------- the service core's output


def test_the_core_builds_what_the_contract_says() -> None:
    entries, checkpoints = build_log(7, 3)
    assert [c.tree_size for c in checkpoints] == [3, 6, 7]
    assert checkpoints[-1].root_hash == tree_root([record_bytes(i)[1] for i in range(7)]).hex()
    for entry in entries:
        first = next(c for c in checkpoints if c.tree_size > entry.leaf_index)
        assert entry.checkpoint_tree_size == first.tree_size
        assert entry.record.signature == first.signature
        assert entry.record.blockchain_ref == f"{LOG_ID}/{first.tree_size}/{entry.leaf_index}"
        assert base64.b64decode(entry.leaf_b64) == record_bytes(entry.leaf_index)[1]  # the exact bytes
    assert all(checkpoint_signed_by(c, load_public_key(SIGNER.public_key_pem())) for c in checkpoints)
    assert not checkpoint_signed_by(checkpoints[0], load_public_key(OTHER.public_key_pem()))


def test_the_core_appends_a_record_once_and_dead_letters_bad_ones() -> None:
    log = AuditLog(LOG_ID)
    key, value = record_bytes(1)
    assert isinstance(log.offer(key, value, Origin("audit.records", 0, 0)), Leaf)
    assert log.offer(key, value, Origin("audit.records", 1, 0)) is None  # written again after a crash
    assert log.size == 1
    bad = log.offer(b"tx", b"{not json", Origin("audit.records", 0, 1))
    assert isinstance(bad, Rejected) and bad.code == "MALFORMED_JSON"
    huge = log.offer(key, value[:-1] + b" " * 30_000 + b"}", Origin("audit.records", 0, 2))
    assert isinstance(huge, Rejected) and huge.code == "OVERSIZED"
    assert log.size == 1


def test_the_core_refuses_to_rebuild_a_broken_log() -> None:
    entries, checkpoints = build_log(6, 3)
    rebuilt = AuditLog(LOG_ID)
    for entry in entries:
        rebuilt.restore(entry)
    rebuilt.restored(checkpoints)
    assert rebuilt.size == 6 and rebuilt.logged == {e.record.audit_id for e in entries}
    key, value = record_bytes(2)
    assert rebuilt.offer(key, value, Origin("audit.records", 0, 9)) is None  # already logged
    gap = AuditLog(LOG_ID)
    gap.restore(entries[0])
    with pytest.raises(Exception, match="leaf 2 where leaf 1 belongs"):
        gap.restore(entries[2])
    short = AuditLog(LOG_ID)
    for entry in entries[:5]:
        short.restore(entry)
    with pytest.raises(Exception, match="5 leaves, the last checkpoint 6"):
        short.restored(checkpoints)


# --------------------------------------------------------------------------- the verifier


def test_an_untouched_log_passes(
    tmp_path: Path, key_file: Path, log20: tuple[list[bytes], list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write(tmp_path / "ok", *log20)
    status, out = run(directory, key_file, capsys=capsys)
    assert status == 0, out
    assert "20 leaves, 4 checkpoints; 4 signatures and 4 roots verified" in out and "OK:" in out


def test_a_record_proof_and_a_consistency_proof_are_printed(
    tmp_path: Path, key_file: Path, log20: tuple[list[bytes], list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write(tmp_path / "ok", *log20)
    status, out = run(
        directory, key_file, "--record", "AUDIT:tx-0007:completed", "--from", "5", "--to", "20", capsys=capsys
    )
    assert status == 0, out
    assert '"leaf_index": 7' in out and '"tree_size": 20' in out and '"verified": true' in out
    assert '"from": 5' in out and '"to": 20' in out
    status, out = run(directory, key_file, "--record", "AUDIT:nope", capsys=capsys)
    assert status == 1 and "record AUDIT:nope: is not in the log" in out
    status, out = run(directory, key_file, "--from", "5", "--to", "12", capsys=capsys)
    assert status == 1 and "no signed checkpoint of size 12" in out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_byte_changed_in_any_record_is_found(
    tmp_path_factory: pytest.TempPathFactory, log20: tuple[list[bytes], list[bytes]], data: st.DataObject
) -> None:
    entries, checkpoints = log20
    index = data.draw(st.integers(0, len(entries) - 1), label="leaf")
    entry = orjson.loads(entries[index])
    original = base64.b64decode(entry["leaf_b64"])
    leaf = bytearray(original)
    position = data.draw(st.integers(0, len(leaf) - 1), label="byte")
    leaf[position] ^= data.draw(st.integers(1, 255), label="xor")
    entry["leaf_b64"] = base64.b64encode(bytes(leaf)).decode()
    tampered = [*entries[:index], orjson.dumps(entry), *entries[index + 1 :]]
    report = check(write(tmp_path_factory.mktemp("byte"), tampered, checkpoints))
    covering = (index // 5 + 1) * 5
    assert f"checkpoint {covering}" in " ".join(findings(report))
    if parsed(bytes(leaf)) != parsed(original):  # a space turned into a tab leaves only the root to tell
        assert any(f.where == f"leaf {index}" for f in report.findings), findings(report)  # the leaf is named


def parsed(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def test_an_edited_record_field_is_named(tmp_path: Path, log20: tuple[list[bytes], list[bytes]]) -> None:
    entries, checkpoints = log20
    entry = orjson.loads(entries[8])
    entry["record"]["details"]["kausAmount"] = "9999.250000"  # what a reader sees, the leaf left alone
    report = check(write(tmp_path, [*entries[:8], orjson.dumps(entry), *entries[9:]], checkpoints))
    assert findings(report) == [
        "leaf 8: the record shown differs from the leaf's bytes in details: the record was edited"
    ]


def test_a_deleted_record_is_found(tmp_path: Path, log20: tuple[list[bytes], list[bytes]]) -> None:
    entries, checkpoints = log20
    report = check(write(tmp_path / "gap", [*entries[:6], *entries[7:]], checkpoints))
    text = findings(report)
    assert text[0] == f"leaf 6: missing: the next entry ({verify.LOG_FILE} line 7) is leaf 7 (leaves 6..6 were removed)"
    assert any(
        t.startswith("checkpoint 10: the root of leaves 0..9")
        and "among leaves 5..9 (checkpoint 5 is the last that matched)" in t
        for t in text
    )
    assert "checkpoint 20: covers 20 leaves but the log holds 19" in " ".join(text)
    # the same deletion with the later entries renumbered to hide the gap
    renumbered = [*entries[:6]]
    for e in entries[7:]:
        d = orjson.loads(e)
        d["leaf_index"] -= 1
        renumbered.append(orjson.dumps(d))
    text = findings(check(write(tmp_path / "renumbered", renumbered, checkpoints)))
    assert f"leaf 6: blockchainRef is '{LOG_ID}/10/7', not '{LOG_ID}/10/6'" in text[0]


def test_two_swapped_records_are_found(tmp_path: Path, log20: tuple[list[bytes], list[bytes]]) -> None:
    entries, checkpoints = log20
    a, b = orjson.loads(entries[11]), orjson.loads(entries[13])
    a["leaf_index"], b["leaf_index"] = 13, 11  # the indices kept in order: only the contents moved
    swapped = [*entries[:11], orjson.dumps(b), entries[12], orjson.dumps(a), *entries[14:]]
    text = findings(check(write(tmp_path, swapped, checkpoints)))
    assert text[0].startswith(f"leaf 11: blockchainRef is '{LOG_ID}/15/13'")
    assert text[1].startswith(f"leaf 13: blockchainRef is '{LOG_ID}/15/11'")
    assert "checkpoint 15: the root of leaves 0..14" in text[2] and "among leaves 10..14" in text[2]
    # swapped with their records' references rewritten too: the signed root still catches it
    for d, index in ((a, 13), (b, 11)):
        d["record"]["blockchainRef"] = f"{LOG_ID}/15/{index}"
    swapped = [*entries[:11], orjson.dumps(b), entries[12], orjson.dumps(a), *entries[14:]]
    text = findings(check(write(tmp_path / "refs", swapped, checkpoints)))
    assert text[0].startswith("checkpoint 15: the root of leaves 0..14")
    assert text[1].startswith("checkpoint 20: the root of leaves 0..19") and "(checkpoint 10 is the last" in text[1]
    assert len(text) == 2


def test_a_truncated_tail_is_found_against_a_kept_checkpoint(
    tmp_path: Path, key_file: Path, log20: tuple[list[bytes], list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    entries, checkpoints = log20
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(checkpoints[-1] + b"\n")  # the auditor kept checkpoint 20 from an earlier check
    truncated = write(tmp_path / "cut", entries[:15], checkpoints[:3])  # leaves and checkpoints after 15 removed
    assert check(truncated).ok  # consistent in itself: only what the auditor kept shows it
    status, out = run(truncated, key_file, "--kept", str(kept), capsys=capsys)
    assert status == 1
    assert "kept checkpoint 20: is not in audit.checkpoints any more (removed or replaced)" in out
    assert "kept checkpoint 20: covers 20 leaves but the log holds 15: the tail was truncated" in out


def test_a_rewritten_past_is_found_against_a_kept_checkpoint(
    tmp_path: Path, log20: tuple[list[bytes], list[bytes]]
) -> None:
    """A whole new log signed by the real key (a stolen key or an insider) still cannot extend what was kept."""
    entries, checkpoints = log20
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(checkpoints[1] + b"\n")
    full = b'"ip":null' in base64.b64decode(orjson.loads(entries[0])["leaf_b64"])  # the fixture's form
    forged_entries, forged = encoded(*build_log(20, 5, edited=3, full=full))  # record 3 rewritten, everything re-signed
    assert check(write(tmp_path / "alone", forged_entries, forged)).ok  # consistent in itself
    text = findings(check(write(tmp_path / "forged", forged_entries, forged), kept=[kept]))
    assert text[0] == "checkpoint 10: signed with another root than kept checkpoint 10: the log was forked or rewritten"
    assert text[1] == "kept checkpoint 10: is not in audit.checkpoints any more (removed or replaced)"
    assert text[2:7] == [f"leaf {i}: its signature is not the signature of checkpoint 10" for i in range(5, 10)]
    assert text[7].startswith("kept checkpoint 10: the root of leaves 0..9")
    assert text[7].endswith("among leaves 0..9 (none before matched)")
    assert len(text) == 8


def test_a_checkpoint_signed_by_another_key_is_found(
    tmp_path: Path, key_file: Path, log20: tuple[list[bytes], list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    entries, checkpoints = log20
    genuine = AUDIT_CHECKPOINTS.decode(checkpoints[2])
    forged = sign_checkpoint(OTHER, genuine.log_id, genuine.tree_size, bytes.fromhex(genuine.root_hash), T0)
    directory = write(tmp_path, entries, [*checkpoints[:2], AUDIT_CHECKPOINTS.encode(forged), checkpoints[3]])
    status, out = run(directory, key_file, capsys=capsys)
    assert status == 1
    assert (
        "checkpoint 15: signature does not verify with the given public key(s) (it names key nexus-signing-v1): "
        "signed by another key" in out
    )
    assert "leaf 10: names checkpoint 15, which is not a signed checkpoint of this log" in out


def test_a_changed_checkpoint_field_breaks_its_signature(
    tmp_path: Path, log20: tuple[list[bytes], list[bytes]]
) -> None:
    entries, checkpoints = log20
    c = orjson.loads(checkpoints[0])
    c["timestamp"] = "2027-01-01T00:00:00Z"
    text = findings(check(write(tmp_path, entries, [orjson.dumps(c), *checkpoints[1:]])))
    assert text[0].startswith("checkpoint 5: signature does not verify")


def test_an_unsigned_tail_and_a_repeated_record_are_found(
    tmp_path: Path, log20: tuple[list[bytes], list[bytes]]
) -> None:
    entries, checkpoints = log20
    extra = orjson.loads(entries[3])
    extra["leaf_index"] = 20
    extra["record"]["blockchainRef"] = f"{LOG_ID}/20/20"
    text = findings(check(write(tmp_path, [*entries, orjson.dumps(extra)], checkpoints)))
    assert "leaf 20: repeats the record of leaf 3 (auditId AUDIT:tx-0003:completed)" in text
    assert "leaves 20..20: are covered by no signed checkpoint (appended without a signature)" in text


def test_rotation_old_checkpoints_verify_with_the_old_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints signed by two key versions: both public keys given, all verify; only the new one: the old fail."""
    v2 = SoftwareSigner.generate("nexus-signing-v2")
    entries, checkpoints = build_log(6, 3)
    log = AuditLog(LOG_ID)
    for e in entries:
        log.restore(e)
    log.restored(checkpoints)
    key, value = record_bytes(6)
    log.offer(key, value, Origin("audit.records", 0, 6))
    batch = log.batch(v2, T0)
    directory = write(tmp_path, *encoded([*entries, *batch.entries], [*checkpoints, batch.checkpoint]))  # type: ignore[list-item]
    keys = []
    for signer in (SIGNER, v2):
        path = tmp_path / f"{signer.key_id}.pem"
        path.write_text(signer.public_key_pem())
        keys += ["--public-key", str(path)]
    assert verify.main(["check", "--dir", str(directory), *keys]) == 0
    assert verify.main(["check", "--dir", str(directory), *keys[2:]]) == 1
    assert "checkpoint 3: signature does not verify" in capsys.readouterr().out


def test_a_change_that_keeps_the_records_meaning_is_still_found_by_its_checkpoint(
    tmp_path: Path, log20: tuple[list[bytes], list[bytes]]
) -> None:
    entries, checkpoints = log20
    entry = orjson.loads(entries[10])
    leaf = base64.b64decode(entry["leaf_b64"])
    assert leaf.startswith(b'{"auditId"')  # a space added before the first key: the same JSON
    entry["leaf_b64"] = base64.b64encode(b"{ " + leaf[1:]).decode()
    report = check(write(tmp_path / "tab", [*entries[:10], orjson.dumps(entry), *entries[11:]], checkpoints))
    assert "checkpoint 15" in " ".join(findings(report)) and "checkpoint 10 is the last that matched" in " ".join(
        findings(report)
    )
