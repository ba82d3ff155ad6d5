"""The auto-payout service (issue 17): rules, triggers and the KYC gate over domain.payouts; pays out through the
bridge (docs/payouts.md, "The service")."""
