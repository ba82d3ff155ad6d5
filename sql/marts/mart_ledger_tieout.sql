-- model: mart_ledger_tieout
-- materialized: macro
-- grain: one row per day x currency: settled transactions on their settlement's day and currency (KAUS for P2P
--        trades); movements tied to no settlement on their own day, currency 'UNKNOWN'.
--        mart_ledger_tieout_as_of(cutoff, grace): as of a cut-off (what had happened by then);
--        mart_ledger_tieout: the same over everything landed.
-- columns: day, currency, settlements, settlement_kaus_units, ledger_kaus_units, difference_kaus_units,
--          settlements_not_tied, settlements_without_ledger, orphan_ledger_movements, orphan_kaus_units,
--          in_flight_movements, in_flight_kaus_units, open_holds, open_hold_kaus_units, capture_refused,
--          capture_refused_kaus_units, payouts, payout_kaus_units
-- rule: K-AUS moved by the ledger vs K-AUS in the settlements, leg by leg, linked by the movements' typed
--       reference (kind + id + leg). A card payment (CARD_PAYMENT, its bridge_tx_id): kaus_debited_units = its
--       CAPTURE, cashback = CASHBACK, ecosystem bonus = BONUS. A holder's payout is a bridge settlement with
--       payout_id (PAYOUT, the payout_id): kaus_debited_units = its CAPTURE, its cashback and bonus (0: a payout
--       earns no reward) = CASHBACK and BONUS. payouts.results is not compared (stg_payouts: derived from the bridge settlement; one
--       payout, one expectation). A trade's notional = PAYMENT, fee = FEE. The dividend pool accrual (fees ->
--       pool: a share with a carried remainder, in no settlement record), deposits, dividends and staking are
--       linked but compared with no settlement; holds and releases move nothing; carbon milli-credits are not
--       money. Only posted K-AUS (POSTED, POST_PENDING) counts.
-- invariant (as of the day's cut-off): difference_kaus_units = 0, settlements_not_tied = 0 (every leg equal),
--       orphan_ledger_movements = 0: K-AUS moved without a reference, for a trade / card payment / payout with no
--       completed settlement, or on a leg its settled transaction does not have (e.g. a payout's K-AUS on the
--       retired leg PAYOUT instead of CAPTURE). Reported, not breaks: movements whose settlement is not recorded
--       yet but which happened within `grace` before the cut-off (in flight), and holds open at the cut-off.
--       A card payment or payout whose capture the ledger refused after the provider paid (mart_capture_refused)
--       is expected to have moved no CAPTURE: counted in capture_refused / capture_refused_kaus_units (the K-AUS
--       its payer owes), a ledger break raised in the exception queue (class capture_refused), not a tie-out
--       failure. payouts / payout_kaus_units: of the settlements, the holders' payouts and their K-AUS (what
--       was paid out, per currency).
CREATE OR REPLACE MACRO mart_ledger_tieout_as_of(cutoff, grace) AS TABLE
WITH expected AS (
    -- a bridge settlement: a card payment, or a holder's payout (payout_id set) under its own reference
    SELECT CASE WHEN b.payout_id IS NULL THEN 'CARD_PAYMENT' ELSE 'PAYOUT' END AS settlement_kind,
           coalesce(b.payout_id, b.bridge_tx_id) AS settlement_ref, b.currency, b.settled_at,
           unnest(['CAPTURE', 'CASHBACK', 'BONUS']) AS leg,
           unnest([CASE WHEN c.settlement_id IS NULL THEN b.kaus_units ELSE 0 END, b.cashback_kaus_units,
                   b.bonus_kaus_units]) AS units,
           c.settlement_id IS NOT NULL AS refused, coalesce(c.kaus_owed_units, 0) AS owed_units
    FROM stg_bridge_settlements b
    LEFT JOIN mart_capture_refused c ON c.settlement_id = b.settlement_id
    WHERE b.status = 'completed' AND b.settled_at <= cutoff
    UNION ALL
    SELECT 'TRADE', trade_id, 'KAUS', settled_at, unnest(['PAYMENT', 'FEE']),
           unnest([notional_kaus_units, fee_kaus_units]), false, 0
    FROM stg_trade_settlements WHERE status = 'completed' AND settled_at <= cutoff
), moved AS (
    SELECT settlement_kind, settlement_ref, leg, sum(amount_units) AS units, count(*) AS movements,
           min(occurred_at) AS first_at
    FROM stg_ledger_transfers
    WHERE asset = 'KAUS' AND kind IN ('POSTED', 'POST_PENDING') AND occurred_at <= cutoff
    GROUP BY ALL
), settled AS (
    SELECT e.settlement_kind, e.settlement_ref, any_value(e.currency) AS currency,
           CAST(min(e.settled_at) AS DATE) AS day,
           sum(e.units) AS settlement_units,
           sum(coalesce(m.units, 0)) AS ledger_units,
           count(*) FILTER (WHERE e.units <> coalesce(m.units, 0)) AS legs_not_tied,
           count(m.leg) AS legs_moved, bool_or(e.refused) AS refused, max(e.owed_units) AS owed_units
    FROM expected e
    LEFT JOIN moved m USING (settlement_kind, settlement_ref, leg)
    GROUP BY e.settlement_kind, e.settlement_ref
), unsettled AS (
    -- K-AUS moved for no completed settlement: in flight when it happened within the grace before the cut-off
    SELECT CAST(m.first_at AS DATE) AS day, m.movements, m.units,
           m.settlement_kind IN ('TRADE', 'CARD_PAYMENT', 'PAYOUT') AND m.first_at > cutoff - grace AS in_flight
    FROM moved m
    WHERE (m.settlement_kind IS NULL OR m.settlement_kind IN ('TRADE', 'CARD_PAYMENT', 'PAYOUT'))
      AND NOT EXISTS (SELECT 1 FROM settled s
                      WHERE s.settlement_kind = m.settlement_kind AND s.settlement_ref = m.settlement_ref)
    UNION ALL
    -- K-AUS moved for a settled transaction on a leg it does not have (the pool accrual aside): never in flight
    SELECT CAST(m.first_at AS DATE), m.movements, m.units, false
    FROM moved m
    WHERE EXISTS (SELECT 1 FROM settled s
                  WHERE s.settlement_kind = m.settlement_kind AND s.settlement_ref = m.settlement_ref)
      AND NOT EXISTS (SELECT 1 FROM expected e WHERE e.settlement_kind = m.settlement_kind
                      AND e.settlement_ref = m.settlement_ref AND e.leg = m.leg)
      AND NOT (m.settlement_kind = 'TRADE' AND m.leg = 'DIVIDEND_POOL')
), open_holds AS (
    SELECT CAST(placed_at AS DATE) AS day, held_kaus_units FROM mart_ledger_open_holds_as_of(cutoff)
), rows AS (
    SELECT day, currency, 1 AS settlements, settlement_units, ledger_units,
           CAST(legs_not_tied > 0 AS INTEGER) AS not_tied,
           CAST(legs_moved = 0 AND NOT refused AS INTEGER) AS without_ledger,
           0 AS orphans, 0 AS orphan_units, 0 AS in_flight, 0 AS in_flight_units, 0 AS holds, 0 AS hold_units,
           CAST(refused AS INTEGER) AS refused, owed_units,
           CAST(settlement_kind = 'PAYOUT' AS INTEGER) AS payouts,
           CASE WHEN settlement_kind = 'PAYOUT' THEN settlement_units + owed_units ELSE 0 END AS payout_units
    FROM settled
    UNION ALL
    SELECT day, 'UNKNOWN', 0, 0, 0, 0, 0,
           CASE WHEN in_flight THEN 0 ELSE movements END, CASE WHEN in_flight THEN 0 ELSE units END,
           CASE WHEN in_flight THEN movements ELSE 0 END, CASE WHEN in_flight THEN units ELSE 0 END, 0, 0, 0, 0,
           0, 0
    FROM unsettled
    UNION ALL
    SELECT day, 'UNKNOWN', 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, held_kaus_units, 0, 0, 0, 0 FROM open_holds
)
SELECT day, currency,
       CAST(sum(settlements) AS BIGINT)                          AS settlements,
       CAST(sum(settlement_units) AS BIGINT)                     AS settlement_kaus_units,
       CAST(sum(ledger_units) AS BIGINT)                         AS ledger_kaus_units,
       CAST(sum(settlement_units) - sum(ledger_units) AS BIGINT) AS difference_kaus_units,
       CAST(sum(not_tied) AS BIGINT)                             AS settlements_not_tied,
       CAST(sum(without_ledger) AS BIGINT)                       AS settlements_without_ledger,
       CAST(sum(orphans) AS BIGINT)                              AS orphan_ledger_movements,
       CAST(sum(orphan_units) AS BIGINT)                         AS orphan_kaus_units,
       CAST(sum(in_flight) AS BIGINT)                            AS in_flight_movements,
       CAST(sum(in_flight_units) AS BIGINT)                      AS in_flight_kaus_units,
       CAST(sum(holds) AS BIGINT)                                AS open_holds,
       CAST(sum(hold_units) AS BIGINT)                           AS open_hold_kaus_units,
       CAST(sum(refused) AS BIGINT)                              AS capture_refused,
       CAST(sum(owed_units) AS BIGINT)                           AS capture_refused_kaus_units,
       CAST(sum(payouts) AS BIGINT)                              AS payouts,
       CAST(sum(payout_units) AS BIGINT)                         AS payout_kaus_units
FROM rows
GROUP BY day, currency;

CREATE OR REPLACE VIEW mart_ledger_tieout AS
SELECT * FROM mart_ledger_tieout_as_of(TIMESTAMPTZ 'infinity', INTERVAL 0 SECOND);
