"""Benchmark of the audit log (issue 18): records appended per second, checkpoint signing rate, and the verifier's
time and peak memory over a log of 1,000,000 records.

    .venv/bin/python bench/bench_audit_log.py [--records 1000000] [--append 200000] [--signatures 2000]

1. **Append**: the service's logic in-process (streams.security.audit_log.AuditLog, no Kafka): each record validated
   at ingress, deduplicated by auditId and appended to the compact tree (``offer``); then the same plus what a
   checkpoint costs per record: the entries built (``batch``, every ``--every`` leaves, software-signed) and encoded
   as the loop writes them. Records are ~420-byte bridge settlement records.
2. **Signing**: one checkpoint's signature (canonical text -> DER), one at a time, p50/p95/p99: the software
   signer, and the HSM's signing key through PKCS#11 (a SoftHSM2 token created in a temporary directory by the key
   manager, streams.security.keys) when SoftHSM2 is installed.
3. **Verify**: a log of ``--records`` leaves with a checkpoint every ``--every`` written as the export's two JSONL
   files (by the service's core, streamed to disk), then ``python -m streams.security.verify check`` run on them in
   a child process: its wall time, CPU and peak RSS, and that it passed. The peak is the child's own VmHWM (read
   at its end): its ru_maxrss would count the generator's memory too, inherited through the fork before exec.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_RECORDS
from domain.merkle import checkpoint_text
from streams.kafka.ingress import Origin
from streams.security import verify
from streams.security.audit_log import AuditLog
from streams.security.signing import CheckpointSigner, SoftwareSigner

T0 = datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
ORIGIN = Origin("audit.records", 0, 0)


def record(i: int) -> tuple[bytes, bytes]:
    tx = f"BTX-{i:012d}"
    value = {
        "auditId": f"AUDIT:{tx}:completed",
        "timestamp": (T0 + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "transactionId": tx,
        "action": "BRIDGE_SETTLEMENT_COMPLETED",
        "actor": {"userId": f"holder-{i % 50_000:06d}", "ip": None, "userAgent": "NEXUS-X/2.0"},
        "details": {
            "kausAmount": f"{i % 1000}.250000",
            "fiatAmount": f"{i % 1000}.25",
            "currency": "USD",
            "exchangeRate": "1.000000",
            "settlementRail": "STRIPE_INSTANT",
            "duration": 180,
        },
        "signature": None,
        "blockchainRef": None,
    }
    # written as the platform's producers write it (every field, the model's own serialisation)
    return tx.encode(), AUDIT_RECORDS.encode(AUDIT_RECORDS.decode(json.dumps(value)))


def bench_append(count: int, every: int) -> None:
    records = [record(i) for i in range(count)]
    log = AuditLog("bench")
    started = time.perf_counter()
    for key, value in records:
        log.offer(key, value, ORIGIN)
    offer_s = time.perf_counter() - started
    signer = SoftwareSigner.generate("bench-signing-v1")
    log = AuditLog("bench")
    encoded_bytes = 0
    started = time.perf_counter()
    for key, value in records:
        log.offer(key, value, ORIGIN)
        if len(log.pending) == every:
            batch = log.batch(signer, T0)
            assert batch.checkpoint is not None
            encoded_bytes += len(AUDIT_CHECKPOINTS.encode(batch.checkpoint))
            encoded_bytes += sum(len(AUDIT_LOG.encode(e)) for e in batch.entries)
            log.committed(batch)
    full_s = time.perf_counter() - started
    print(f"append: {count:,} records; offer (validate, dedup, append): {count / offer_s:,.0f} records/s")
    print(
        f"append: with a checkpoint every {every} (entries built and encoded, software-signed): "
        f"{count / full_s:,.0f} records/s, {encoded_bytes / count:,.0f} bytes written per record"
    )


def bench_signing(name: str, signer: CheckpointSigner, count: int) -> None:
    times_us = []
    for i in range(count):
        text = checkpoint_text("bench", i + 1, i.to_bytes(32, "big"), 1_765_000_000_000 + i, signer.key_id)
        started = time.perf_counter_ns()
        signer.sign(text)
        times_us.append((time.perf_counter_ns() - started) / 1000)
    q = statistics.quantiles(times_us, n=100)
    rate = count / (sum(times_us) / 1e6)
    print(
        f"signing ({name}): {rate:,.0f} checkpoints/s one at a time; "
        f"p50 {q[49]:,.0f} us, p95 {q[94]:,.0f} us, p99 {q[98]:,.0f} us"
    )


def bench_hsm_signing(count: int) -> None:
    try:
        from streams.security.keys import KeyManager, open_hsm
        from streams.security.settings import SecuritySettings
    except ImportError as exc:
        print(f"signing (HSM over PKCS#11): not measured: {exc}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as tmp:
        security = SecuritySettings(hsm_dir=Path(tmp) / "hsm", token_label="bench-audit")
        try:
            hsm = open_hsm(security)
        except Exception as exc:  # no SoftHSM2 on this machine
            print(f"signing (HSM over PKCS#11): not measured: {type(exc).__name__}: {exc}")
            return
        with hsm:
            manager = KeyManager(hsm, security)
            manager.rotate_due()
            bench_signing(f"HSM {security.pkcs11_module.rsplit('/', 1)[-1]} PKCS#11", manager.signer(), count)


def write_log(directory: Path, count: int, every: int, signer: SoftwareSigner) -> None:
    log = AuditLog("bench")
    with (directory / verify.LOG_FILE).open("wb") as entries, (directory / verify.CHECKPOINTS_FILE).open("wb") as cps:
        for i in range(count):
            key, value = record(i)
            log.offer(key, value, ORIGIN)
            if len(log.pending) == every or i == count - 1:
                batch = log.batch(signer, T0 + timedelta(seconds=i // every))
                assert batch.checkpoint is not None
                cps.write(AUDIT_CHECKPOINTS.encode(batch.checkpoint) + b"\n")
                entries.writelines(AUDIT_LOG.encode(e) + b"\n" for e in batch.entries)
                log.committed(batch)
                log.logged.clear()  # the generator's own memory; the records are unique anyway


# The verifier's own command line, then its peak resident set from the kernel (this process image only).
CHILD = (
    "import sys; from streams.security.verify import main; status = main(sys.argv[1:]); "
    "print([x for x in open('/proc/self/status') if x.startswith('VmHWM')][0], file=sys.stderr); sys.exit(status)"
)


def bench_verify(count: int, every: int, keep: Path | None) -> None:
    signer = SoftwareSigner.generate("bench-signing-v1")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        directory = keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_log(directory, count, every, signer)
        size_mb = (directory / verify.LOG_FILE).stat().st_size / 1e6
        print(f"verify: wrote {count:,} entries ({size_mb:,.0f} MB) in {time.perf_counter() - started:,.1f} s")
        pem = directory / "signing.pem"
        pem.write_text(signer.public_key_pem())
        command = [sys.executable, "-c", CHILD, "check", "--dir", str(directory), "--public-key", str(pem)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"verify: {done.stdout.strip().splitlines()[0] if done.stdout else done.stderr[-500:]}")
        peak_kb = int(done.stderr.rsplit("VmHWM:", 1)[-1].split()[0]) if "VmHWM:" in done.stderr else -1
        print(
            f"verify: check of {count:,} records, {count // every:,} checkpoints: exit {done.returncode}, "
            f"{wall_s:,.1f} s wall, {cpu_s:,.1f} s CPU, peak RSS {peak_kb / 1024:,.0f} MB "
            f"({count / wall_s:,.0f} records/s)"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, help="leaves of the log the verifier checks")
    p.add_argument("--append", type=int, default=200_000, help="records appended in the append benchmark")
    p.add_argument("--every", type=int, default=1000, help="leaves per checkpoint")
    p.add_argument("--signatures", type=int, default=2000)
    p.add_argument("--keep", type=Path, help="write the verifier's files here and keep them")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    bench_append(args.append, args.every)
    bench_signing("software, cryptography", SoftwareSigner.generate("bench-signing-v1"), args.signatures)
    bench_hsm_signing(args.signatures)
    bench_verify(args.records, args.every, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
