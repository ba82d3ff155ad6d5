-- Settlements to reconcile on $recon_date: those settled that day plus unmatched ones carried forward
-- (pending at a cut-off, or missing at the provider) from the last $carry_start..$recon_date runs.
-- Only completed settlements on a rail with a provider statement feed take part. Ledger breaks ($ledger_breaks:
-- classes not found by matching) say nothing about the provider side, so they are not the settlement's state here.
WITH latest AS (
    SELECT settlement_id, line_id, outcome, break_class
    FROM recon_results
    WHERE settlement_id IS NOT NULL AND recon_date < $recon_date AND recon_date >= $carry_start
      AND NOT list_contains($ledger_breaks, coalesce(break_class, ''))
    QUALIFY row_number() OVER (PARTITION BY settlement_id ORDER BY recon_date DESC, line_id NULLS LAST) = 1
)
SELECT f.settlement_id, f.provider, f.provider_reference, f.counterparty, f.currency, f.amount_minor,
       f.fee_minor, f.fx_rate, f.settled_at
FROM fct_settlements f
LEFT JOIN latest l ON l.settlement_id = f.settlement_id
WHERE f.status = 'completed' AND f.kind IN ('bridge', 'payout') AND f.provider IS NOT NULL
  AND (f.settled_date = $recon_date
       OR (f.settled_date < $recon_date AND l.settlement_id IS NOT NULL AND l.line_id IS NULL
           AND (l.outcome = 'pending' OR l.break_class = 'missing_at_provider')));
