-- model: mart_ledger_tieout
-- materialized: view
-- grain: one row per day x currency (settlement currency; KAUS for P2P trades)
-- columns: day, currency, settlements, settlement_kaus_units, ledger_kaus_units, difference_kaus_units,
--          settlements_without_ledger, orphan_ledger_movements
-- invariant: difference_kaus_units = 0 and orphan_ledger_movements = 0 (Σ settlements = Σ K-AUS ledger movements;
--            a trade's carbon milli-credit mint carries its settlement_ref but is not money: left out)
WITH s AS (
    SELECT settlement_id, currency, settled_date AS day, kaus_units
    FROM fct_settlements WHERE status = 'completed'
), l AS (
    SELECT settlement_ref, min(CAST(occurred_at AS DATE)) AS day, sum(amount_units) AS kaus_units
    FROM stg_ledger_transfers
    WHERE settlement_ref IS NOT NULL AND asset = 'KAUS' AND kind IN ('POSTED', 'POST_PENDING')
    GROUP BY settlement_ref
)
SELECT coalesce(s.day, l.day)                              AS day,
       coalesce(s.currency, 'UNKNOWN')                     AS currency,
       count(s.settlement_id)                              AS settlements,
       coalesce(sum(s.kaus_units), 0)                      AS settlement_kaus_units,
       coalesce(sum(l.kaus_units), 0)                      AS ledger_kaus_units,
       coalesce(sum(s.kaus_units), 0) - coalesce(sum(l.kaus_units), 0) AS difference_kaus_units,
       count(*) FILTER (WHERE l.settlement_ref IS NULL)    AS settlements_without_ledger,
       count(*) FILTER (WHERE s.settlement_id IS NULL)     AS orphan_ledger_movements
FROM s FULL OUTER JOIN l ON l.settlement_ref = s.settlement_id
GROUP BY ALL
