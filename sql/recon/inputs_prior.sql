-- References matched to a provider line on earlier days (a new line pointing at one is a duplicate).
SELECT DISTINCT f.provider, f.provider_reference, f.settlement_id
FROM recon_results r
JOIN fct_settlements f ON f.settlement_id = r.settlement_id
WHERE r.recon_date < $recon_date AND r.recon_date >= $carry_start AND r.line_id IS NOT NULL;
