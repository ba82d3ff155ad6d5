-- Provider lines to reconcile on $recon_date: that day's statements plus unmatched lines carried forward.
WITH latest AS (
    SELECT line_id, settlement_id, outcome, break_class
    FROM recon_results
    WHERE line_id IS NOT NULL AND recon_date < $recon_date AND recon_date >= $carry_start
    QUALIFY row_number() OVER (PARTITION BY line_id ORDER BY recon_date DESC, settlement_id NULLS LAST) = 1
)
SELECT p.line_id, p.provider, p.provider_reference, p.our_reference, p.counterparty, p.currency, p.amount_minor,
       p.fee_minor, p.fx_rate, p.booked_at
FROM stg_provider_lines p
LEFT JOIN latest l ON l.line_id = p.line_id
WHERE p.statement_date = $recon_date
   OR (p.statement_date < $recon_date AND l.line_id IS NOT NULL AND l.settlement_id IS NULL
       AND (l.outcome = 'pending' OR l.break_class = 'missing_internally'));
