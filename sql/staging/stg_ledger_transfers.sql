-- model: stg_ledger_transfers
-- materialized: table
-- grain: one row per ledger transfer_id
-- columns: transfer_id, kind, debit_account_id, credit_account_id, asset, amount_units, pending_id, expires_at,
--          reason, settlement_kind, settlement_ref, leg, occurred_at
-- asset: KAUS (amount_units in K-AUS base units, 10^6 per K-AUS) or CARBON_MILLICREDIT (milli-credits, not
--        money): a reader of amounts filters on it.
-- settlement_kind, settlement_ref, leg: the movement's typed `reference` (contracts LedgerReference), written by
--        the service that caused it: TRADE (trade_id), CARD_PAYMENT (bridge_tx_id), DEPOSIT, DIVIDEND (their
--        command_id), PAYOUT (payout_id); the leg says which part of it the movement is. NULL: no reference.
SELECT
    event_id                                                   AS transfer_id,
    payload->>'kind'                                           AS kind,
    payload->>'debit_account_id'                               AS debit_account_id,
    payload->>'credit_account_id'                              AS credit_account_id,
    payload->>'asset'                                          AS asset,
    CAST(payload->>'amount_units' AS BIGINT)                   AS amount_units,
    payload->>'pending_id'                                     AS pending_id,
    CAST(payload->>'expires_at' AS TIMESTAMPTZ)                AS expires_at,
    payload->>'reason'                                         AS reason,
    payload->'reference'->>'kind'                              AS settlement_kind,
    payload->'reference'->>'id'                                AS settlement_ref,
    payload->'reference'->>'leg'                               AS leg,
    event_ts                                                   AS occurred_at
FROM {{ source('LEDGER_TRANSFERS') }}
