"""The auditors' verifier: checks the audit log with nothing but the signing key's public key (docs/audit-log.md).

    python -m streams.security.verify export --out DIR [--bootstrap HOST:PORT]
    python -m streams.security.verify check --dir DIR --public-key signing.pem [--public-key older.pem ...]
                                            [--kept kept-checkpoints.jsonl] [--record AUDIT_ID] [--from N --to M]

``export`` copies ``audit.log`` and ``audit.checkpoints`` from a cluster into ``audit-log.jsonl`` and
``audit-checkpoints.jsonl`` (each line a record's exact value). ``check`` reads only those files and the public
key(s): every checkpoint's signature; every signed root recomputed from the leaves; every leaf's record against its
leaf bytes, its ``signature`` and ``blockchainRef``; leaves missing, repeated or covered by no checkpoint; the
checkpoints an auditor kept from an earlier check (``--kept``: a truncated tail or a rewritten past shows against
them even when the newer checkpoints were removed too); the inclusion proof of one record (``--record``) and a
consistency proof between two checkpoints (``--from``/``--to``), printed. Every problem is reported with where it
is (which leaf, which checkpoint) and why; the exit status is 1 when there is any, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from contracts.models import AuditCheckpoint, AuditRecord
from contracts.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_RECORDS
from domain.merkle import (
    CompactTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from streams.kafka import wire_format
from streams.security.signing import checkpoint_signed_by, load_public_key

LOG_FILE = "audit-log.jsonl"
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"
FINDINGS_SHOWN_MAX = 200  # the report lists this many problems, then says how many more


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # "leaf 17", "checkpoint 200", "kept checkpoint 300", "audit-log.jsonl line 4"
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    log_id: str
    leaves: int = 0
    checkpoints: int = 0
    signatures_verified: int = 0
    roots_verified: int = 0
    findings: list[Finding] = field(default_factory=list)
    proofs: list[str] = field(default_factory=list)  # what --record / --from --to printed

    def fail(self, where: str, what: str) -> None:
        self.findings.append(Finding(where, what))

    @property
    def ok(self) -> bool:
        return not self.findings


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Heads:
    """The checkpoints of one log whose signature verified (untrusted ones are reported, never used)."""

    by_size: dict[int, AuditCheckpoint] = field(default_factory=dict)
    kept_sizes: set[int] = field(default_factory=set)

    def sizes(self) -> list[int]:
        return sorted(self.by_size)


def parse_checkpoints(lines: Iterable[bytes], source: str, report: Report) -> list[AuditCheckpoint]:
    out: list[AuditCheckpoint] = []
    for number, line in enumerate(lines, 1):
        try:
            checkpoint = AUDIT_CHECKPOINTS.decode(line)
        except ValidationError as exc:
            report.fail(f"{source} line {number}", f"not a checkpoint: {_first_error(exc)}")
            continue
        if checkpoint.log_id == report.log_id:
            out.append(checkpoint)
    return out


def verify_heads(
    published: list[AuditCheckpoint],
    kept: list[AuditCheckpoint],
    keys: Sequence[ec.EllipticCurvePublicKey],
    report: Report,
) -> Heads:
    """Signatures first: a checkpoint no given key signed is reported and not trusted for anything else. The
    auditor's kept checkpoints come first: a published one that contradicts one of them is the one reported."""
    heads = Heads()
    for label, checkpoints in (("kept checkpoint", kept), ("checkpoint", published)):
        for c in checkpoints:
            where = f"{label} {c.tree_size}"
            if not any(checkpoint_signed_by(c, key) for key in keys):
                report.fail(
                    where,
                    f"signature does not verify with the given public key(s) (it names key {c.key_id}): "
                    "signed by another key, or a field of the checkpoint was changed after signing",
                )
                continue
            report.signatures_verified += 1
            known = heads.by_size.get(c.tree_size)
            if known is not None and known.root_hash != c.root_hash:
                first = "kept checkpoint" if c.tree_size in heads.kept_sizes else "checkpoint"
                report.fail(
                    where, f"signed with another root than {first} {c.tree_size}: the log was forked or rewritten"
                )
                continue
            heads.by_size[c.tree_size] = c
            if label == "kept checkpoint":
                heads.kept_sizes.add(c.tree_size)
    published_sizes = {(c.tree_size, c.root_hash) for c in published}
    for c in kept:
        if (c.tree_size, c.root_hash) not in published_sizes:
            report.fail(f"kept checkpoint {c.tree_size}", "is not in audit.checkpoints any more (removed or replaced)")
    report.checkpoints = len(published)
    return heads


# --------------------------------------------------------------------------- leaves


@dataclass
class Walk:
    """State of one pass over the leaves in file order."""

    tree: CompactTree = field(default_factory=CompactTree)
    hashes: list[bytes] | None = None  # every leaf hash, when a proof is asked for
    seen_ids: dict[bytes, int] = field(default_factory=dict)  # digest of auditId -> leaf index
    record_index: int | None = None  # the leaf of --record
    last_matched: int = 0  # the largest checkpoint size whose root matched
    last_kept_matched: int = 0  # the same among the auditor's kept checkpoints


def check_leaves(lines: Iterable[bytes], heads: Heads, report: Report, want: str | None, keep: bool) -> Walk:
    walk = Walk(hashes=[] if keep else None)
    for number, line in enumerate(lines, 1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            report.fail(f"{LOG_FILE} line {number}", f"not JSON: {exc}")
            continue
        if not isinstance(entry, dict) or entry.get("log_id") != report.log_id:
            continue
        _check_entry(entry, number, walk, heads, report, want)
    report.leaves = walk.tree.size
    return walk


def _check_entry(
    entry: dict[str, Any], number: int, walk: Walk, heads: Heads, report: Report, want: str | None
) -> None:
    index = walk.tree.size
    claimed = entry.get("leaf_index")
    if claimed != index:
        if isinstance(claimed, int) and claimed > index:
            report.fail(
                f"leaf {index}",
                f"missing: the next entry ({LOG_FILE} line {number}) is leaf {claimed} "
                f"(leaves {index}..{claimed - 1} were removed)",
            )
        else:
            report.fail(
                f"leaf {claimed}", f"out of order or repeated ({LOG_FILE} line {number}, where leaf {index} belongs)"
            )
    try:
        leaf = base64.b64decode(entry.get("leaf_b64", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        report.fail(f"leaf {index}", "leaf_b64 is not base64")
        leaf = b""
    h = leaf_hash(leaf)
    walk.tree.append_hash(h)
    if walk.hashes is not None:
        walk.hashes.append(h)
    audit_id = _check_record(entry, leaf, index, heads, report)
    if audit_id is not None:
        _check_unique(audit_id, index, walk, report)
        if want is not None and audit_id == want:
            walk.record_index = index
    size = walk.tree.size
    head = heads.by_size.get(size)
    if head is not None:
        _check_root(head, walk, heads, report)


def _check_record(entry: dict[str, Any], leaf: bytes, index: int, heads: Heads, report: Report) -> str | None:
    """The entry's record is the leaf's record plus its checkpoint's reference; returns the leaf's auditId."""
    where = f"leaf {index}"
    shown = entry.get("record")
    audit_id = _same_record(shown, leaf)
    if audit_id is None:
        audit_id = _compare_records(shown, leaf, where, report)
    if not isinstance(shown, dict):
        return audit_id
    size = entry.get("checkpoint_tree_size")
    expected_ref = f"{report.log_id}/{size}/{index}"
    if shown.get("blockchainRef") != expected_ref:
        report.fail(
            where,
            f"blockchainRef is {shown.get('blockchainRef')!r}, not {expected_ref!r}: the entry was moved "
            "from another leaf, or a leaf before it was removed or added",
        )
    head = heads.by_size.get(size) if isinstance(size, int) else None
    if head is None:
        report.fail(where, f"names checkpoint {size}, which is not a signed checkpoint of this log")
    elif not isinstance(size, int) or size <= index:
        report.fail(where, f"names checkpoint {size}, which does not cover it")
    elif shown.get("signature") != head.signature:
        report.fail(where, f"its signature is not the signature of checkpoint {size}")
    return audit_id


def _same_record(shown: Any, leaf: bytes) -> str | None:
    """The fast path: the leaf's JSON and the record shown are equal apart from signature and blockchainRef (the
    platform's producers write every field, as the entry does). None: compare them field by field instead."""
    try:
        original = orjson.loads(leaf)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(original, dict) or not isinstance(shown, dict) or original.keys() != shown.keys():
        return None
    audit_id = original.get("auditId")
    for name, value in shown.items():
        if name not in ("signature", "blockchainRef") and original.get(name, _MISSING) != value:
            return None
    return audit_id if isinstance(audit_id, str) else None


_MISSING = object()


def _compare_records(shown: Any, leaf: bytes, where: str, report: Report) -> str | None:
    """Both as contract records (defaults filled in), and what differs named."""
    payload = wire_format.unwrap(AUDIT_RECORDS.name, leaf)
    try:
        original: AuditRecord = AUDIT_RECORDS.decode(payload if isinstance(payload, bytes) else b"")
    except ValidationError as exc:
        report.fail(where, f"its bytes are not an audit record ({_first_error(exc)})")
        return None
    try:
        record = AuditRecord.model_validate(shown)
    except ValidationError as exc:
        report.fail(where, f"its entry's record is not an audit record ({_first_error(exc)})")
        return original.audit_id
    bare = {"signature": None, "blockchain_ref": None}
    if record.model_copy(update=bare) != original.model_copy(update=bare):
        changed = _changed_fields(record, original)
        report.fail(where, f"the record shown differs from the leaf's bytes in {changed}: the record was edited")
    return original.audit_id


def _changed_fields(shown: AuditRecord, original: AuditRecord) -> str:
    a = shown.model_dump(by_alias=True, exclude={"signature", "blockchain_ref"})
    b = original.model_dump(by_alias=True, exclude={"signature", "blockchain_ref"})
    names = [k for k in a if a[k] != b.get(k)]
    return ", ".join(names) or "its fields"


def _check_unique(audit_id: str, index: int, walk: Walk, report: Report) -> None:
    digest = hashlib.blake2b(audit_id.encode(), digest_size=16).digest()  # 16 bytes a leaf, not the whole id
    first = walk.seen_ids.setdefault(digest, index)
    if first != index:
        report.fail(f"leaf {index}", f"repeats the record of leaf {first} (auditId {audit_id})")


def _check_root(head: AuditCheckpoint, walk: Walk, heads: Heads, report: Report) -> None:
    size = head.tree_size
    kept = size in heads.kept_sizes
    root = walk.tree.root().hex()
    if root == head.root_hash:
        report.roots_verified += 1
        walk.last_matched = size
        if kept:
            walk.last_kept_matched = size
        return
    # A kept checkpoint narrows the change down by kept checkpoints only: the published ones may be re-signed.
    base = walk.last_kept_matched if kept else walk.last_matched
    since = f"{'kept ' if kept else ''}checkpoint {base} is the last that matched" if base else "none before matched"
    report.fail(
        f"{'kept checkpoint' if kept else 'checkpoint'} {size}",
        f"the root of leaves 0..{size - 1} is {root}, the signed root is {head.root_hash}: a leaf was changed, "
        f"removed, added or reordered among leaves {base}..{size - 1} ({since})",
    )


def check_tail(walk: Walk, heads: Heads, report: Report) -> None:
    """Checkpoints beyond the leaves (a truncated tail) and leaves beyond every checkpoint (unsigned)."""
    size = walk.tree.size
    for s in heads.sizes():
        if s > size:
            label = "kept checkpoint" if s in heads.kept_sizes else "checkpoint"
            report.fail(
                f"{label} {s}",
                f"covers {s} leaves but the log holds {size}: the tail was truncated "
                f"(leaves {size}..{s - 1} are missing)",
            )
    largest = max(heads.by_size, default=0)
    if size > largest:
        report.fail(
            f"leaves {largest}..{size - 1}", "are covered by no signed checkpoint (appended without a signature)"
        )


# --------------------------------------------------------------------------- proofs


def prove_record(want: str, walk: Walk, heads: Heads, report: Report) -> None:
    """The inclusion proof of one record in the largest signed checkpoint that covers it."""
    index, hashes = walk.record_index, walk.hashes
    if index is None or hashes is None:
        report.fail(f"record {want}", "is not in the log")
        return
    covering = [s for s in heads.sizes() if s > index and s <= len(hashes)]
    if not covering:
        report.fail(f"record {want}", f"leaf {index} is covered by no signed checkpoint")
        return
    head = heads.by_size[covering[-1]]
    proof = inclusion_proof(hashes, index, head.tree_size)
    ok = verify_inclusion(hashes[index], index, head.tree_size, proof, bytes.fromhex(head.root_hash))
    report.proofs.append(
        _dump(
            {
                "record": want,
                "leaf_index": index,
                "tree_size": head.tree_size,
                "leaf_hash": hashes[index].hex(),
                "root_hash": head.root_hash,
                "checkpoint_signature": head.signature,
                "audit_path": [p.hex() for p in proof],
                "verified": ok,
            }
        )
    )
    if not ok:
        report.fail(f"record {want}", f"its inclusion proof in checkpoint {head.tree_size} does not verify")


def prove_consistency(first: int, second: int, walk: Walk, heads: Heads, report: Report) -> None:
    where = f"consistency {first} -> {second}"
    hashes = walk.hashes
    missing = [s for s in (first, second) if s not in heads.by_size]
    if missing:
        report.fail(where, f"no signed checkpoint of size {', '.join(map(str, missing))}")
        return
    if hashes is None or first > second or second > len(hashes):
        report.fail(where, f"cannot be proven from a log of {walk.tree.size} leaves")
        return
    a, b = heads.by_size[first], heads.by_size[second]
    proof = consistency_proof(hashes, first, second)
    ok = verify_consistency(first, second, bytes.fromhex(a.root_hash), bytes.fromhex(b.root_hash), proof)
    report.proofs.append(
        _dump(
            {
                "from": first,
                "to": second,
                "from_root": a.root_hash,
                "to_root": b.root_hash,
                "proof": [p.hex() for p in proof],
                "verified": ok,
            }
        )
    )
    if not ok:
        report.fail(where, f"checkpoint {second} does not extend checkpoint {first}: the log was rewritten")


def _dump(value: dict[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _first_error(exc: ValidationError) -> str:
    e = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in e['loc']) or '<value>'}: {e['msg']}"


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class CheckRequest:
    directory: Path
    public_keys: list[ec.EllipticCurvePublicKey]
    kept: list[Path] = field(default_factory=list)
    log_id: str | None = None
    record: str | None = None
    consistency: tuple[int, int] | None = None


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        for line in f:
            stripped = line.rstrip(b"\r\n")
            if stripped:
                yield stripped


def log_ids(request: CheckRequest) -> list[str]:
    if request.log_id is not None:
        return [request.log_id]
    ids = set()
    for path in [request.directory / CHECKPOINTS_FILE, *request.kept]:
        for line in _lines(path):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict) and isinstance(value.get("log_id"), str):
                ids.add(value["log_id"])
    return sorted(ids)


def check_log(request: CheckRequest, log_id: str) -> Report:
    report = Report(log_id)
    published = parse_checkpoints(_lines(request.directory / CHECKPOINTS_FILE), CHECKPOINTS_FILE, report)
    kept = [c for path in request.kept for c in parse_checkpoints(_lines(path), path.name, report)]
    heads = verify_heads(published, kept, request.public_keys, report)
    keep = request.record is not None or request.consistency is not None
    walk = check_leaves(_lines(request.directory / LOG_FILE), heads, report, request.record, keep)
    check_tail(walk, heads, report)
    if request.record is not None:
        prove_record(request.record, walk, heads, report)
    if request.consistency is not None:
        prove_consistency(*request.consistency, walk, heads, report)
    return report


def render(report: Report) -> str:
    head = (
        f"log {report.log_id}: {report.leaves} leaves, {report.checkpoints} checkpoints; "
        f"{report.signatures_verified} signatures and {report.roots_verified} roots verified"
    )
    lines = [head, *report.proofs]
    if report.ok:
        lines.append(
            "OK: every checkpoint is signed by the given key, every signed root is the root of the leaves, "
            "every record is its leaf"
        )
        return "\n".join(lines)
    lines.append(f"FAILED: {len(report.findings)} problem(s)")
    lines.extend(f"  {f}" for f in report.findings[:FINDINGS_SHOWN_MAX])
    if len(report.findings) > FINDINGS_SHOWN_MAX:
        lines.append(f"  ... and {len(report.findings) - FINDINGS_SHOWN_MAX} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- export


def export(bootstrap: str, out: Path, log_id: str | None = None) -> dict[str, int]:
    """Write audit.log and audit.checkpoints (committed records, exact values) as JSONL files in `out`."""
    from streams.security.audit_log import read_to_end  # Kafka only where a cluster is read

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for topic, name in ((AUDIT_LOG, LOG_FILE), (AUDIT_CHECKPOINTS, CHECKPOINTS_FILE)):
        written = 0
        tmp = out / f".{name}.tmp"
        with tmp.open("wb") as f:
            for msg in read_to_end(bootstrap, topic):
                value = msg.value() or b""
                if log_id is not None and msg.key() != log_id.encode():
                    continue
                if b"\n" in value or b"\r" in value:
                    raise ValueError(f"{topic.name} offset {msg.offset()}: a value with a line break; not exportable")
                f.write(value + b"\n")
                written += 1
        tmp.replace(out / name)
        counts[name] = written
    return counts


# --------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streams.security.verify", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="copy audit.log and audit.checkpoints into JSONL files")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--bootstrap", help="Kafka bootstrap servers (default: NEXUS_KAFKA_BOOTSTRAP_SERVERS)")
    e.add_argument("--log-id", help="only this log's records")
    c = sub.add_parser("check", help="verify exported files with the public key(s)")
    c.add_argument("--dir", type=Path, required=True, help=f"where {LOG_FILE} and {CHECKPOINTS_FILE} are")
    c.add_argument(
        "--public-key",
        type=Path,
        action="append",
        required=True,
        help="signing key PEM (repeatable: one per key version that signed)",
    )
    c.add_argument("--kept", type=Path, action="append", default=[], help="checkpoints kept from an earlier check")
    c.add_argument("--log-id", help="check only this log (default: every log in the files)")
    c.add_argument("--record", metavar="AUDIT_ID", help="print and verify this record's inclusion proof")
    c.add_argument("--from", dest="first", type=int, help="consistency from this checkpoint size ...")
    c.add_argument("--to", dest="second", type=int, help="... to this one: print and verify the proof")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "export":
        from streams.settings import get_settings

        counts = export(args.bootstrap or get_settings().bootstrap_servers, args.out, args.log_id)
        print(", ".join(f"{name}: {n} records" for name, n in counts.items()))
        return 0
    if (args.first is None) != (args.second is None):
        print("--from and --to go together", file=sys.stderr)
        return 2
    missing = [p for p in (args.dir / LOG_FILE, args.dir / CHECKPOINTS_FILE, *args.kept) if not p.is_file()]
    if missing:
        print(f"no such file: {', '.join(map(str, missing))} (run export first)", file=sys.stderr)
        return 2
    try:
        keys = [load_public_key(path.read_bytes()) for path in args.public_key]
    except (OSError, ValueError) as exc:
        print(f"public key: {exc}", file=sys.stderr)
        return 2
    request = CheckRequest(
        args.dir,
        keys,
        args.kept,
        args.log_id,
        args.record,
        (args.first, args.second) if args.first is not None else None,
    )
    ids = log_ids(request)
    if not ids:
        print(f"no checkpoint in {args.dir / CHECKPOINTS_FILE}: nothing is signed, nothing can be verified")
        return 1
    reports = [check_log(request, log_id) for log_id in ids]
    print("\n\n".join(render(r) for r in reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
