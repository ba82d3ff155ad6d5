"""Local payout-provider simulator (PayPal, Stripe, Wise, Toss, Alipay API subsets) with fault injection."""
