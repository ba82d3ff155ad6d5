"""Dev signers for multi-sig governance: five ECDSA P-256 key files (owner-only) and the signer-set JSON of their
public keys the governance service reads (NEXUS_SECURITY_SIGNERS_FILE).

    python -m devtools.signers [--dir DIR] [--count 5] [--force]

Default directory: <NEXUS_DATA_DIR>/governance (``.local/governance``), where the service looks by default. For
tests and the demo only: production signers generate their keys on their own devices and hand over the public key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.files import write_private
from streams.security.governance import SIGNERS_FORMAT, public_key_pem
from streams.settings import get_settings

SIGNERS_FILE = "signers.json"


def default_dir() -> Path:
    return get_settings().data_dir / "governance"


def key_path(directory: Path, signer_id: str) -> Path:
    return directory / f"{signer_id}.pem"


def write_signer_set(path: Path, signers: dict[str, str]) -> None:
    document = {
        "format": SIGNERS_FORMAT,
        "signers": [{"signer_id": sid, "public_key_pem": pem} for sid, pem in sorted(signers.items())],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def generate(directory: Path, count: int = 5, prefix: str = "signer", force: bool = False) -> Path:
    """``count`` signers ``<prefix>-1`` .. in ``directory``; returns the signer-set file. Existing key files are
    kept unless ``force`` (a dev signer's key is not silently replaced)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    signers: dict[str, str] = {}
    for i in range(1, count + 1):
        signer_id = f"{prefix}-{i}"
        path = key_path(directory, signer_id)
        if path.exists() and not force:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey), path
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(path, pem)
        signers[signer_id] = public_key_pem(key)
    signer_set = directory / SIGNERS_FILE
    write_signer_set(signer_set, signers)
    return signer_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.signers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default <data dir>/governance)")
    parser.add_argument("--count", type=int, default=5, help="how many signers (5 to 7)")
    parser.add_argument("--prefix", default="signer", help="signer ids are <prefix>-1, <prefix>-2, ...")
    parser.add_argument("--force", action="store_true", help="replace existing key files with new keys")
    args = parser.parse_args(argv)
    if not 5 <= args.count <= 7:
        parser.error("--count must be 5 to 7 (the matrix needs five signers; the contract allows seven)")
    directory = args.dir or default_dir()
    signer_set = generate(directory, args.count, args.prefix, args.force)
    print(f"signer set: {signer_set}")
    for i in range(1, args.count + 1):
        print(f"  {args.prefix}-{i}: {key_path(directory, f'{args.prefix}-{i}')} (private key, owner-only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
