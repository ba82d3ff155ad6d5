"""domain.merkle against hand-built trees, RFC 6962's reference vectors, and properties over random logs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.merkle import (
    EMPTY_ROOT,
    CompactTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    split_point,
    tree_root,
    verify_consistency,
    verify_inclusion,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# The leaves of the CT reference implementation's tests (RFC 6962 test data) and its published roots.
VECTOR_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H_96A2 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H_5F08 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H_6B47 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
H_BC1A = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
H_CA85 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
H_D37E = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
H_0EBC = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
H_6E34 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
H_FAC5 = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
HASHES = [leaf_hash(d) for d in VECTOR_LEAVES]


def hexes(proof: list[bytes]) -> list[str]:
    return [p.hex() for p in proof]


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"abc") == sha(b"\x00abc")
    assert node_hash(b"l" * 32, b"r" * 32) == sha(b"\x01" + b"l" * 32 + b"r" * 32)
    assert EMPTY_ROOT == sha(b"") == tree_root([])


def test_small_trees_by_hand() -> None:
    a, b, c, d, e = (sha(b"\x00" + x) for x in (b"a", b"b", b"c", b"d", b"e"))
    ab, cd = sha(b"\x01" + a + b), sha(b"\x01" + c + d)
    assert tree_root([b"a"]) == a
    assert tree_root([b"a", b"b"]) == ab
    assert tree_root([b"a", b"b", b"c"]) == sha(b"\x01" + ab + c)  # split at 2: ((a b) c)
    assert tree_root([b"a", b"b", b"c", b"d"]) == sha(b"\x01" + ab + cd)
    abcd = sha(b"\x01" + ab + cd)
    assert tree_root([b"a", b"b", b"c", b"d", b"e"]) == sha(b"\x01" + abcd + e)  # split at 4, not 3
    # leaf c in the 5-leaf tree: sibling d, then (a b), then e
    assert inclusion_proof([a, b, c, d, e], 2) == [d, ab, e]
    # consistency 3 -> 5: c, d (to rebuild cd), ab, e
    assert consistency_proof([a, b, c, d, e], 3) == [c, d, ab, e]


def test_split_point() -> None:
    assert [split_point(n) for n in (2, 3, 4, 5, 8, 9, 1000)] == [1, 2, 2, 4, 4, 8, 512]
    with pytest.raises(ValueError):
        split_point(1)


def test_reference_roots() -> None:
    for n in range(1, 9):
        assert root_of(HASHES[:n]).hex() == VECTOR_ROOTS[n - 1]


@pytest.mark.parametrize(
    ("index", "size", "expected"),
    [
        (0, 1, []),
        (0, 8, [H_96A2, H_5F08, H_6B47]),
        (5, 8, [H_BC1A, H_CA85, H_D37E]),
        (2, 3, [H_FAC5]),
        (1, 5, [H_6E34, H_5F08, H_BC1A]),
    ],
)
def test_reference_inclusion_proofs(index: int, size: int, expected: list[str]) -> None:
    proof = inclusion_proof(HASHES, index, size)
    assert hexes(proof) == expected
    root = bytes.fromhex(VECTOR_ROOTS[size - 1])
    assert verify_inclusion(HASHES[index], index, size, proof, root)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (1, 1, []),
        (1, 8, [H_96A2, H_5F08, H_6B47]),
        (6, 8, [H_0EBC, H_CA85, H_D37E]),
        (2, 5, [H_5F08, H_BC1A]),
    ],
)
def test_reference_consistency_proofs(first: int, second: int, expected: list[str]) -> None:
    proof = consistency_proof(HASHES, first, second)
    assert hexes(proof) == expected
    r1, r2 = (bytes.fromhex(VECTOR_ROOTS[s - 1]) for s in (first, second))
    assert verify_consistency(first, second, r1, r2, proof)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(HASHES, 8)
    with pytest.raises(ValueError):
        consistency_proof(HASHES, 5, 4)
    assert not verify_inclusion(HASHES[0], 3, 3, [], HASHES[0])
    assert not verify_consistency(5, 4, HASHES[0], HASHES[0], [])
    assert verify_consistency(0, 8, EMPTY_ROOT, bytes.fromhex(VECTOR_ROOTS[7]), [])
    assert not verify_consistency(3, 8, bytes.fromhex(VECTOR_ROOTS[2]), bytes.fromhex(VECTOR_ROOTS[7]), [])
    assert not verify_consistency(8, 8, bytes.fromhex(VECTOR_ROOTS[6]), bytes.fromhex(VECTOR_ROOTS[7]), [])


def test_compact_tree_matches_the_full_tree_at_every_size() -> None:
    tree = CompactTree()
    assert tree.root() == EMPTY_ROOT
    data = [f"record-{i}".encode() for i in range(70)]
    for i, d in enumerate(data):
        assert tree.append(d) == i
        assert tree.root() == tree_root(data[: i + 1])
        assert len(tree.peaks) == bin(i + 1).count("1")  # O(log n) hashes kept
    copy = CompactTree(tree.size, list(tree.peaks))
    assert copy.root() == tree.root()
    with pytest.raises(ValueError):
        CompactTree(3, [])


logs = st.lists(st.binary(max_size=12), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(logs, st.data())
def test_every_inclusion_proof_verifies_and_a_changed_leaf_fails(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(d) for d in leaves]
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = root_of(hashes, 0, size)
    proof = inclusion_proof(hashes, index, size)
    assert verify_inclusion(hashes[index], index, size, proof, root)
    assert not verify_inclusion(leaf_hash(leaves[index] + b"!"), index, size, proof, root)
    for wrong_size in (size - 1, size + 1):  # the proof against the signed head of another size
        if index < wrong_size <= len(leaves):
            assert not verify_inclusion(hashes[index], index, wrong_size, proof, root_of(hashes, 0, wrong_size))
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        if leaves[other] != leaves[index]:
            assert not verify_inclusion(hashes[index], other, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(logs, st.data())
def test_every_consistency_proof_verifies_and_a_rewrite_fails(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(d) for d in leaves]
    second = data.draw(st.integers(1, len(leaves)), label="second")
    first = data.draw(st.integers(1, second), label="first")
    r1, r2 = root_of(hashes, 0, first), root_of(hashes, 0, second)
    proof = consistency_proof(hashes, first, second)
    assert verify_consistency(first, second, r1, r2, proof)
    if first < second:
        # one leaf of the older tree rewritten: its root no longer matches what the newer tree extends
        changed = data.draw(st.integers(0, first - 1), label="changed")
        rewritten = [*hashes[:changed], leaf_hash(leaves[changed] + b"!"), *hashes[changed + 1 :]]
        assert not verify_consistency(first, second, root_of(rewritten, 0, first), r2, proof)
        # a newer tree built over a rewritten prefix does not extend the older one
        forged = consistency_proof(rewritten, first, second)
        assert not verify_consistency(first, second, r1, root_of(rewritten, 0, second), forged)
        if first < second - 1:  # against the signed head of another size
            assert not verify_consistency(first, second - 1, r1, root_of(hashes, 0, second - 1), proof)
