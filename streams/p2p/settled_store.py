"""The settler's settled trades on local disk, so that its memory and its snapshots follow carries and
registrations, not history (``domain.trade_settlement.SettledStore``; SQL in ``sql/state/trade_settled.sql``).

One SQLite file per ledger partition (``settled-<partition>.sqlite3``), beside its snapshots and its id store, and
the same discipline as the id store (``streams/p2p/id_store.py``), on the settler's own sequence (one step per
settled trade): recent entries stay in memory until ``FLUSH_ROWS`` of them are written in one transaction with
the sequence they reach; the snapshot writer flushes it (fsynced) before a snapshot exists; restoring a snapshot
at sequence *N* deletes every row past *N* (those trades are settled again by the replay); a file behind a
snapshot cannot serve it (``TradeSettler.from_dict`` refuses it); a file of another ``ledger.commands`` is emptied
at open.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from domain.order_book import Side, Trade
from domain.trade_settlement import EnergySource, SettledTrade
from infra.sql_state import load_statements
from streams.p2p.id_store import FLUSH_ROWS, SequencedFile

SQL = load_statements("trade_settled.sql")


def encode_settled(s: SettledTrade) -> bytes:
    """A settled trade as a JSON array: the trade's fields in order, then what settling it moved."""
    trade = s.trade
    return orjson.dumps([*trade[:-3], trade.aggressor_side.value, *trade[-2:], *s[1:-2], s.source.value, s[-1]])


def decode_settled(body: bytes) -> SettledTrade:
    row = orjson.loads(body)
    n = len(Trade._fields)
    fields = row[:n]
    fields[-3] = Side(fields[-3])
    fee_units, dividend_units, carbon_millicredits, source, settled_at_ms = row[n:]
    return SettledTrade(
        Trade(*fields), fee_units, dividend_units, carbon_millicredits, EnergySource(source), settled_at_ms
    )


class SqliteSettledStore(SequencedFile):
    """``domain.trade_settlement.SettledStore`` in a SQLite file (module docstring). The ledger's thread only."""

    def __init__(self, path: Path, topic_id: str) -> None:
        super().__init__(path, topic_id, SQL, ("create_meta", "create_settled"), ("forget_settled_after",))
        self._recent: dict[str, tuple[int, SettledTrade]] = {}  # not yet in the file

    # ------------------------------------------------------------------ the SettledStore protocol

    def get(self, trade_id: str) -> SettledTrade | None:
        entry = self._recent.get(trade_id)
        if entry is not None:
            return entry[1]
        row = self._con.execute(SQL["settled"], (trade_id,)).fetchone()
        return None if row is None else decode_settled(row[0])

    def put(self, seq: int, settled: SettledTrade) -> None:
        self._advance(seq)
        self._recent[settled.trade.trade_id] = (seq, settled)
        if len(self._recent) >= FLUSH_ROWS:
            self.flush()

    def count(self) -> int:
        (count,) = self._con.execute(SQL["count_settled"]).fetchone()
        return int(count) + len(self._recent)

    # ------------------------------------------------------------------ writing

    @property
    def in_memory(self) -> int:
        return len(self._recent)

    def _recent_rows(self) -> list[tuple[str, list[tuple[int, str, bytes]]]]:
        return [("put_settled", [(seq, trade_id, encode_settled(s)) for trade_id, (seq, s) in self._recent.items()])]

    def _drop_recent_after(self, seq: int) -> None:
        self._recent = {k: e for k, e in self._recent.items() if e[0] <= seq}

    def _clear_recent(self) -> None:
        self._recent.clear()
