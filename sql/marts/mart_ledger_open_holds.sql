-- model: mart_ledger_open_holds_as_of
-- materialized: macro
-- grain: one row per hold placed by the cut-off and neither captured nor released by it (a K-AUS reservation in
--        flight: reported, never a tie-out break; holds move nothing until captured)
-- columns: hold_id, settlement_kind, settlement_ref, payer_account_id, credit_account_id, held_kaus_units,
--          placed_at, expires_at, past_expiry (the ledger releases it at its expiry; the release record is
--          written with the next hold command it applies)
-- usage: SELECT * FROM mart_ledger_open_holds_as_of(TIMESTAMPTZ '2026-11-02 00:00:00+00')
CREATE OR REPLACE MACRO mart_ledger_open_holds_as_of(cutoff) AS TABLE
SELECT h.transfer_id AS hold_id, h.settlement_kind, h.settlement_ref, h.debit_account_id AS payer_account_id,
       h.credit_account_id, h.amount_units AS held_kaus_units, h.occurred_at AS placed_at, h.expires_at,
       h.expires_at <= cutoff AS past_expiry
FROM stg_ledger_transfers h
WHERE h.kind = 'PENDING' AND h.asset = 'KAUS' AND h.occurred_at <= cutoff
  AND NOT EXISTS (
      SELECT 1 FROM stg_ledger_transfers r
      WHERE r.pending_id = h.transfer_id AND r.kind IN ('POST_PENDING', 'VOID_PENDING') AND r.occurred_at <= cutoff
  );
