"""Merkle tree of the audit log, as Certificate Transparency defines it (RFC 6962, RFC 9162 §2.1).

Pure: hashing and proofs over leaf hashes, no I/O. Leaves and interior nodes are domain-separated (a 0x00 or 0x01
prefix) so a leaf can never be passed off as a node (second-preimage attacks on the tree). The tree of n leaves
splits at the largest power of two below n, so the tree of a prefix of the log is a subtree-wise prefix of every
larger tree: that is what makes consistency proofs (nothing removed, nothing rewritten) possible, which a plain hash
chain cannot offer against a truncated tail.

Proof verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 literally; the proof generation follows the recursive
definitions of §2.1.3.1 and §2.1.4.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256 of the empty string


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves does not split")
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes], start: int = 0, end: int | None = None) -> bytes:
    """MTH(D[start:end]) from the leaves' hashes (not their data), O(n) hashes, recursion depth log2(n)."""
    stop = len(leaf_hashes) if end is None else end
    n = stop - start
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[start]
    k = split_point(n)
    return node_hash(root_of(leaf_hashes, start, start + k), root_of(leaf_hashes, start + k, stop))


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaves' data."""
    return root_of([leaf_hash(d) for d in leaves])


# --------------------------------------------------------------------------- inclusion (audit paths)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int | None = None) -> list[bytes]:
    """PATH(index, D[0:tree_size]): the sibling hashes from the leaf up to the root (RFC 9162 §2.1.3.1)."""
    size = len(leaf_hashes) if tree_size is None else tree_size
    if not 0 <= index < size <= len(leaf_hashes):
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, stop, m = 0, size, index
    while stop - start > 1:  # iterative form of the recursion; siblings collected bottom-up at the end
        k = split_point(stop - start)
        if m < k:
            path.append(root_of(leaf_hashes, start + k, stop))
            stop = start + k
        else:
            path.append(root_of(leaf_hashes, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `leaf` (its hash) is leaf `index` of the tree of `tree_size` leaves whose root is `root`."""
    if index >= tree_size or index < 0:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --------------------------------------------------------------------------- consistency


def consistency_proof(leaf_hashes: Sequence[bytes], first: int, second: int | None = None) -> list[bytes]:
    """PROOF(first, D[0:second]) (RFC 9162 §2.1.4.1): the tree of `second` leaves extends the tree of `first`."""
    n = len(leaf_hashes) if second is None else second
    if not 0 <= first <= n <= len(leaf_hashes):
        raise ValueError(f"no consistency proof from {first} to {n} leaves (the log has {len(leaf_hashes)})")
    if first == 0 or first == n:
        return []
    return _subproof(leaf_hashes, first, 0, n, True)


def _subproof(leaf_hashes: Sequence[bytes], m: int, start: int, stop: int, whole: bool) -> list[bytes]:
    n = stop - start
    if m == n:
        return [] if whole else [root_of(leaf_hashes, start, stop)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(leaf_hashes, m, start, start + k, whole), root_of(leaf_hashes, start + k, stop)]
    return [*_subproof(leaf_hashes, m - k, start + k, stop, False), root_of(leaf_hashes, start, start + k)]


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether the tree of `second` leaves (root `second_root`) extends the tree of `first` leaves (RFC 9162
    §2.1.4.2). An empty tree is extended by every tree; equal sizes need equal roots and an empty proof."""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a whole subtree of the second
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


# --------------------------------------------------------------------------- incremental (the service's tree)


@dataclass
class CompactTree:
    """An append-only tree keeping only the roots of its perfect subtrees (at most log2(n) + 1 hashes): the
    service appends leaf by leaf and signs the root of every size it checkpoints without holding the leaves."""

    size: int = 0
    # (height, hash) of each perfect subtree, left to right, heights strictly decreasing.
    peaks: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if sum(1 << h for h, _ in self.peaks) != self.size:
            raise ValueError("peaks do not add up to the tree's size")

    def append_hash(self, leaf: bytes) -> int:
        """Append a leaf by its hash; returns its index."""
        peaks, height, h = self.peaks, 0, leaf
        while peaks and peaks[-1][0] == height:  # a carry, as in binary addition
            _, left = peaks.pop()
            h = node_hash(left, h)
            height += 1
        peaks.append((height, h))
        self.size += 1
        return self.size - 1

    def append(self, data: bytes) -> int:
        return self.append_hash(leaf_hash(data))

    def root(self) -> bytes:
        """MTH of the leaves so far: the peaks folded right to left, which is exactly RFC 6962's split."""
        if not self.peaks:
            return EMPTY_ROOT
        r = self.peaks[-1][1]
        for _, left in reversed(self.peaks[:-1]):
            r = node_hash(left, r)
        return r


# --------------------------------------------------------------------------- checkpoints (signed tree heads)

CHECKPOINT_HEADER = "nexus-x audit log v1"  # domain separation: these bytes can mean nothing but a checkpoint


def checkpoint_text(log_id: str, tree_size: int, root: bytes, timestamp_ms: int, key_id: str) -> bytes:
    """What the signing key signs for a checkpoint (docs/audit-log.md): one field a line, each line ending in a
    newline, the root in lowercase hex, the time in integer milliseconds since the epoch (UTC)."""
    for name, value in (("log_id", log_id), ("key_id", key_id)):
        if not value or any(c in value for c in "\n\r"):
            raise ValueError(f"{name} must be one non-empty line")
    if tree_size < 0 or timestamp_ms < 0 or len(root) != HASH_BYTES:
        raise ValueError("tree_size and timestamp_ms are non-negative, the root 32 bytes")
    return f"{CHECKPOINT_HEADER}\n{log_id}\n{tree_size}\n{root.hex()}\n{timestamp_ms}\n{key_id}\n".encode()


__all__ = [
    "CHECKPOINT_HEADER",
    "EMPTY_ROOT",
    "HASH_BYTES",
    "CompactTree",
    "checkpoint_text",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "split_point",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]
