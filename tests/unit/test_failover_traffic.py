"""What a redirected producer re-sends: the records the new region lacks, in the order they were first sent."""

from __future__ import annotations

from collections import Counter

from devtools.drills.traffic import unmatched


def test_only_what_the_new_region_lacks_is_re_sent_in_send_order() -> None:
    values = [b"a", b"b", b"c", b"d", b"e"]
    there = Counter([b"a", b"c"])  # a prefix per partition: a and c made it, b, d and e did not
    assert unmatched(values, range(5), there) == [1, 3, 4]


def test_two_sends_of_the_same_bytes_need_two_copies_there() -> None:
    values = [b"x", b"y", b"x"]
    assert unmatched(values, [0, 1, 2], Counter([b"x", b"y"])) == [2]
    assert unmatched(values, [0, 1, 2], Counter([b"x", b"x", b"y"])) == []


def test_records_of_others_on_the_topic_change_nothing() -> None:
    there = Counter([b"someone-else", b"a"])
    assert unmatched([b"a", b"b"], [0, 1], there) == [1]
    assert there == Counter([b"someone-else", b"a"])  # the caller's count is left as it was
