-- model: stg_ledger_transfers
-- materialized: table
-- grain: one row per ledger transfer_id
-- columns: transfer_id, kind, debit_account_id, credit_account_id, asset, amount_units, pending_id, reason,
--          settlement_kind, settlement_ref, occurred_at
-- asset: KAUS (amount_units in K-AUS base units, 10^6 per K-AUS) or CARBON_MILLICREDIT (milli-credits, not
--        money): a reader of amounts filters on it.
-- settlement_ref: the settlement a movement belongs to, from the reason convention "<kind>:<settlement id>"
--                 (kind = trade | bridge | payout); other movements (cashback, fees, holds) carry NULL.
SELECT
    event_id                                                   AS transfer_id,
    payload->>'kind'                                           AS kind,
    payload->>'debit_account_id'                               AS debit_account_id,
    payload->>'credit_account_id'                              AS credit_account_id,
    payload->>'asset'                                          AS asset,
    CAST(payload->>'amount_units' AS BIGINT)                   AS amount_units,
    payload->>'pending_id'                                     AS pending_id,
    payload->>'reason'                                         AS reason,
    NULLIF(regexp_extract(payload->>'reason', '^(trade|bridge|payout):(.+)$', 1), '') AS settlement_kind,
    NULLIF(regexp_extract(payload->>'reason', '^(trade|bridge|payout):(.+)$', 2), '') AS settlement_ref,
    event_ts                                                   AS occurred_at
FROM {{ source('LEDGER_TRANSFERS') }}
