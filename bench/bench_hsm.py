"""Checkpoint signing through PKCS#11 (issue 18 benchmark): ECDSA P-256 signatures per second and per-signature
latency p50/p95/p99 with the key manager's HsmSigner on a SoftHSM2 token (created under a temporary directory,
or the configured token with --configured), the rate at which the audit log can sign checkpoints.

Each signature is checked once against the public key (outside the timed loop) so a broken signer cannot look
fast. Also times, for reference: verification through PKCS#11, AES-GCM encryption of a 32-byte data key (envelope
encryption's outer layer), and one backup (wrap every key + the file write).

    .venv/bin/python -m bench.bench_hsm --signatures 20000 --threads 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.measure import pct
from streams.security.hsm import open_hsm
from streams.security.keys import KeyManager
from streams.security.settings import SecuritySettings, get_security_settings

MESSAGE = b"nexus-x audit log v1\nbench\n1000000\n" + bytes(32).hex().encode() + b"\n1767225600000\nnexus-signing-v1\n"


def timed(n: int, op: Callable[[int], object]) -> tuple[float, list[float]]:
    """(wall seconds, per-call microseconds) of n calls."""
    each = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        op(i)
        each.append((time.perf_counter() - t) * 1e6)
    return time.perf_counter() - start, each


def report(name: str, n: int, wall_s: float, each_us: list[float]) -> None:
    print(
        f"{name:34} {n / wall_s:10,.0f}/s   p50 {pct(each_us, 0.5):7.1f} us  p95 {pct(each_us, 0.95):7.1f} us  "
        f"p99 {pct(each_us, 0.99):7.1f} us  (n={n})"
    )


def threaded_sign(km: KeyManager, n: int, threads: int) -> float:
    """Signatures per second with `threads` callers sharing the signer (one PKCS#11 session: they serialise)."""
    signer = km.signer()
    per = n // threads
    workers = [threading.Thread(target=lambda: [signer.sign(MESSAGE) for _ in range(per)]) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - start)


def run(settings: SecuritySettings, signatures: int, threads: list[int]) -> None:
    km = KeyManager(open_hsm(settings), settings)
    km.rotate_due()
    signer = km.signer()
    public = serialization.load_pem_public_key(signer.public_key_pem().encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signer.sign(MESSAGE), MESSAGE, ec.ECDSA(hashes.SHA256()))  # raises if the signer is wrong
    for _ in range(200):  # warm-up
        signer.sign(MESSAGE)
    print(f"token {settings.token_label!r} via {settings.pkcs11_module}; signer {signer.key_id}")
    wall, each = timed(signatures, lambda _i: signer.sign(MESSAGE))
    report("sign (ECDSA P-256, SHA-256, DER)", signatures, wall, each)
    signature = signer.sign(MESSAGE)
    wall, each = timed(signatures // 4, lambda _i: km.hsm.verify(signer.key_id, MESSAGE, signature))
    report("verify through PKCS#11", signatures // 4, wall, each)
    data_key = bytes(32)
    wall, each = timed(signatures // 4, lambda _i: km.encrypt(data_key, b"aad"))
    report("AES-256-GCM encrypt a data key", signatures // 4, wall, each)
    for count in threads:
        print(f"sign with {count} thread(s) sharing the session: {threaded_sign(km, signatures, count):10,.0f}/s")
    start = time.perf_counter()
    km.backup()
    print(f"one backup (wrap {len(km.ring().live()) - 1} keys + write): {(time.perf_counter() - start) * 1e3:.1f} ms")
    km.hsm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signatures", type=int, default=20_000)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--configured", action="store_true", help="the configured token, not a temporary one")
    args = parser.parse_args()
    if args.configured:
        run(get_security_settings(), args.signatures, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = SecuritySettings(hsm_dir=Path(tmp) / "hsm", token_label=f"bench-{uuid.uuid4().hex[:6]}")
        run(settings, args.signatures, args.threads)


if __name__ == "__main__":
    main()
