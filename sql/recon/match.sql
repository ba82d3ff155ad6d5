-- Variance analysis in DuckDB: the same rules as domain/variance_rules.reconcile, set-based.
-- Inputs (registered by warehouse.matching.match_duckdb): m_settlements_in, m_lines_in, m_prior_in.
-- Parameters: $amount_tol $fee_tol $fx_ppm $window_us $grace_us $window_end.
-- Output: m_results (settlement_id, line_id, tier, outcome, break_class, amount_delta_minor, fee_delta_minor,
-- related_id). Rates are compared as integers scaled by 1e10 (they carry at most 10 decimals).
--
-- Items get integer ids once: si in settlement_id order, li in line_id order, so ordering by (time, si) is the
-- rule's (time, settlement_id) tie-break; every later join and aggregate works on integers, and the id strings
-- are looked up again only for the output.

CREATE OR REPLACE TEMP TABLE m_s AS
SELECT row_number() OVER (ORDER BY settlement_id) AS si, * FROM m_settlements_in;
CREATE OR REPLACE TEMP TABLE m_l AS
SELECT row_number() OVER (ORDER BY line_id) AS li, * FROM m_lines_in;
CREATE OR REPLACE TEMP TABLE m_out (
    si BIGINT, li BIGINT, tier VARCHAR, outcome VARCHAR, break_class VARCHAR,
    amount_delta_minor BIGINT, fee_delta_minor BIGINT, related_id VARCHAR
);
CREATE OR REPLACE TEMP TABLE m_pairs (si BIGINT, li BIGINT, tier VARCHAR);

-- ---------------------------------------------------------------- tier 1: references
CREATE OR REPLACE TEMP TABLE m_c1 AS
SELECT l.li, s.si, l.booked_at, s.settled_at
FROM m_l l JOIN m_s s ON s.provider_reference = l.provider_reference AND s.provider = l.provider;

CREATE OR REPLACE TEMP TABLE m_c AS
SELECT * FROM m_c1
UNION ALL
SELECT l.li, s.si, l.booked_at, s.settled_at
FROM (SELECT li, our_reference, booked_at FROM m_l WHERE our_reference IS NOT NULL) l
ANTI JOIN (SELECT DISTINCT li FROM m_c1) c USING (li)
JOIN m_s s ON s.settlement_id = l.our_reference;

CREATE OR REPLACE TEMP TABLE m_choice AS
SELECT li, arg_min(si, (settled_at, si)) AS si FROM m_c GROUP BY li;

CREATE OR REPLACE TEMP TABLE m_best AS
SELECT si, arg_min(li, (booked_at, li)) AS best_li FROM m_c GROUP BY si;

INSERT INTO m_pairs
SELECT c.si, c.li, 'reference'
FROM m_choice c JOIN m_best b ON b.si = c.si AND b.best_li = c.li;

INSERT INTO m_out
SELECT NULL, c.li, 'reference', 'break', 'duplicate', l.amount_minor, l.fee_minor, s.settlement_id
FROM m_choice c
ANTI JOIN (SELECT li FROM m_pairs) p USING (li)
JOIN m_l l ON l.li = c.li
JOIN m_s s ON s.si = c.si;

INSERT INTO m_out
SELECT b.si, NULL, 'reference', 'break', 'duplicate', -s.amount_minor, -s.fee_minor, l.line_id
FROM m_best b
ANTI JOIN (SELECT si FROM m_pairs) p USING (si)
JOIN m_s s ON s.si = b.si
JOIN m_l l ON l.li = b.best_li;

-- ---------------------------------------------------------------- tier 2: tolerance, mutual nearest
-- candidates are looked up by (time bucket, amount bucket) and their neighbours, which hold every pair within
-- tolerance; the WHERE is the exact rule
CREATE OR REPLACE TEMP TABLE m_s2 AS
SELECT s.*, epoch_us(s.settled_at) // $window_us AS tb, s.amount_minor // ($amount_tol + 1) AS ab
FROM m_s s ANTI JOIN (SELECT DISTINCT si FROM m_c) c USING (si);

CREATE OR REPLACE TEMP TABLE m_l2 AS
SELECT l.*, epoch_us(l.booked_at) // $window_us AS tb, l.amount_minor // ($amount_tol + 1) AS ab
FROM m_l l ANTI JOIN (SELECT DISTINCT li FROM m_c) c USING (li);

CREATE OR REPLACE TEMP TABLE m_p2 AS
SELECT li, si, dt, da FROM (
    SELECT l.li, s.si,
           abs(epoch_us(l.booked_at) - epoch_us(s.settled_at)) AS dt,
           abs(l.amount_minor - s.amount_minor) AS da
    FROM m_l2 l
    CROSS JOIN (VALUES (-1), (0), (1)) k(k)
    CROSS JOIN (VALUES (-1), (0), (1)) j(j)
    JOIN m_s2 s ON s.provider = l.provider AND s.currency = l.currency AND s.tb = l.tb + k.k AND s.ab = l.ab + j.j
)
WHERE dt <= $window_us AND da <= $amount_tol;

INSERT INTO m_pairs
SELECT bl.si, bl.li, 'tolerance'
FROM (SELECT li, arg_min(si, (dt, da, si)) AS si FROM m_p2 GROUP BY li) bl
JOIN (SELECT si, arg_min(li, (dt, da, li)) AS li FROM m_p2 GROUP BY si) bs
  ON bs.si = bl.si AND bs.li = bl.li;

-- ---------------------------------------------------------------- tier 3: many-to-one
CREATE OR REPLACE TEMP TABLE m_s3 AS
SELECT * FROM m_s2 ANTI JOIN (SELECT si FROM m_pairs WHERE tier = 'tolerance') p USING (si);

CREATE OR REPLACE TEMP TABLE m_l3 AS
SELECT * FROM m_l2 ANTI JOIN (SELECT li FROM m_pairs WHERE tier = 'tolerance') p USING (li);

CREATE OR REPLACE TEMP TABLE m_groups AS
SELECT provider, currency, counterparty, CAST(settled_at AS DATE) AS day,
       count(*) AS n, sum(amount_minor) AS amount, sum(fee_minor) AS fee
FROM m_s3 WHERE counterparty IS NOT NULL
GROUP BY ALL HAVING count(*) >= 2;

CREATE OR REPLACE TEMP TABLE m_batch AS
SELECT min(l.li) AS li, g.provider, g.currency, g.counterparty, g.day
FROM m_l3 l
JOIN m_groups g ON g.provider = l.provider AND g.currency = l.currency AND g.counterparty = l.counterparty
               AND g.day = CAST(l.booked_at AS DATE)
WHERE abs(g.amount - l.amount_minor) <= g.n * $amount_tol AND abs(g.fee - l.fee_minor) <= g.n * $fee_tol
GROUP BY ALL;

INSERT INTO m_out
SELECT s.si, b.li, 'many_to_one', 'matched', NULL, 0, 0, NULL
FROM m_batch b
JOIN m_s3 s ON s.provider = b.provider AND s.currency = b.currency AND s.counterparty = b.counterparty
           AND CAST(s.settled_at AS DATE) = b.day;

-- ---------------------------------------------------------------- classify the matched pairs
INSERT INTO m_out
SELECT si, li, tier, CASE WHEN break_class IS NULL THEN 'matched' ELSE 'break' END, break_class,
       l_amount - s_amount, l_fee - s_fee, NULL
FROM (
    SELECT *,
           CASE
             WHEN s_ccy <> l_ccy THEN 'amount_variance'
             WHEN both_fx AND abs(rp - ri) * 1000000 > CAST($fx_ppm AS HUGEINT) * ri THEN 'fx_variance'
             WHEN CASE WHEN both_fx
                       THEN gap * ri > CAST($amount_tol AS HUGEINT) * ri + CAST(s_amount AS HUGEINT) * abs(rp - ri)
                       ELSE gap > $amount_tol END THEN 'amount_variance'
             WHEN abs(l_fee - s_fee) > $fee_tol THEN 'fee_variance'
             WHEN CAST(settled_at AS DATE) <> CAST(booked_at AS DATE)
                  AND abs(epoch_us(booked_at) - epoch_us(settled_at)) > $grace_us THEN 'timing'
           END AS break_class
    FROM (
        SELECT p.si, p.li, p.tier,
               s.currency AS s_ccy, l.currency AS l_ccy, s.amount_minor AS s_amount, l.amount_minor AS l_amount,
               s.fee_minor AS s_fee, l.fee_minor AS l_fee, s.settled_at, l.booked_at,
               s.fx_rate IS NOT NULL AND l.fx_rate IS NOT NULL AS both_fx,
               CAST(s.fx_rate * 10000000000 AS HUGEINT) AS ri,
               CAST(l.fx_rate * 10000000000 AS HUGEINT) AS rp,
               CAST(abs(l.amount_minor - s.amount_minor) AS HUGEINT) AS gap
        FROM m_pairs p JOIN m_s s ON s.si = p.si JOIN m_l l ON l.li = p.li
    )
);

-- ---------------------------------------------------------------- leftovers
INSERT INTO m_out
SELECT s.si, NULL, 'none',
       CASE WHEN in_grace THEN 'pending' ELSE 'break' END,
       CASE WHEN in_grace THEN NULL ELSE 'missing_at_provider' END,
       -s.amount_minor, -s.fee_minor, NULL
FROM (
    SELECT *, settled_at >= $window_end - to_microseconds($grace_us) AND settled_at < $window_end AS in_grace
    FROM m_s3
) s
ANTI JOIN (SELECT si FROM m_out WHERE tier = 'many_to_one') b USING (si);

INSERT INTO m_out
SELECT NULL, l.li,
       CASE WHEN is_dup THEN 'reference' ELSE 'none' END,
       CASE WHEN is_dup THEN 'break' WHEN in_grace THEN 'pending' ELSE 'break' END,
       CASE WHEN is_dup THEN 'duplicate' WHEN in_grace THEN NULL ELSE 'missing_internally' END,
       l.amount_minor, l.fee_minor,
       CASE WHEN prior_id THEN l.our_reference WHEN is_dup THEN l.provider_reference END
FROM (
    SELECT l.*,
           coalesce(pr.hit, false) AS prior_ref, coalesce(pi.hit, false) AS prior_id,
           coalesce(pr.hit, false) OR coalesce(pi.hit, false) AS is_dup,
           l.booked_at >= $window_end - to_microseconds($grace_us) AND l.booked_at < $window_end AS in_grace
    FROM m_l3 l
    LEFT JOIN (SELECT DISTINCT provider, provider_reference, true AS hit FROM m_prior_in
               WHERE provider_reference IS NOT NULL) pr USING (provider, provider_reference)
    LEFT JOIN (SELECT DISTINCT settlement_id AS our_reference, true AS hit FROM m_prior_in
               WHERE settlement_id IS NOT NULL) pi USING (our_reference)
    ANTI JOIN (SELECT DISTINCT li FROM m_out WHERE tier = 'many_to_one') b USING (li)
) l;

-- ---------------------------------------------------------------- ids back for the output
CREATE OR REPLACE TEMP TABLE m_results AS
SELECT s.settlement_id, l.line_id, o.tier, o.outcome, o.break_class, o.amount_delta_minor, o.fee_delta_minor,
       o.related_id
FROM m_out o
LEFT JOIN m_s s ON s.si = o.si
LEFT JOIN m_l l ON l.li = o.li;
