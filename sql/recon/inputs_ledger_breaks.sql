-- Ledger breaks of $recon_date, as result rows beside the matching's: card payments settled that day whose K-AUS
-- capture the ledger refused after the provider paid out (mart_capture_refused). The payer owes the K-AUS; the
-- amount delta is the fiat paid out and not collected (negative: ours short), related_id the bridge_tx_id that
-- the audit record and the ledger's movements name. $tier, $outcome and $break_class come from
-- domain.variance_rules (none, break, capture_refused).
SELECT settlement_id, CAST(NULL AS VARCHAR) AS line_id, $tier AS tier, $outcome AS outcome,
       $break_class AS break_class, -amount_minor AS amount_delta_minor, CAST(0 AS BIGINT) AS fee_delta_minor,
       bridge_tx_id AS related_id
FROM mart_capture_refused
WHERE settled_date = $recon_date
ORDER BY settlement_id;
