-- model: mart_capture_refused
-- materialized: view
-- grain: one row per completed card payment or holder payout whose K-AUS capture the ledger refused after the
--        provider paid out (the bridge's BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT audit record,
--        domain.bridge.BridgeAuditAction): the merchant or holder was paid, the payer was not debited and owes
--        the K-AUS. A ledger break (break class capture_refused, exception K:<settlement_id>), not a tie-out failure.
-- columns: settlement_id, bridge_tx_id, payer_account_id, provider, rail, currency, amount_minor, kaus_owed_units,
--          settled_at, settled_date, refused_at
SELECT b.settlement_id, b.bridge_tx_id, b.payer_account_id, NULLIF(r.provider, '') AS provider, b.rail, b.currency,
       b.amount_minor, b.kaus_units AS kaus_owed_units, b.settled_at, CAST(b.settled_at AS DATE) AS settled_date,
       a.refused_at
FROM stg_bridge_settlements b
JOIN (SELECT transaction_id, min(recorded_at) AS refused_at FROM stg_audit_records
      WHERE action = 'BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT' GROUP BY transaction_id) a
  ON a.transaction_id = b.bridge_tx_id
LEFT JOIN rail_providers r ON r.rail = b.rail
WHERE b.status = 'completed'
