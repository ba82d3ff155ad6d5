"""The KYC webhook receiver (issue 17 item 3): a Sumsub-style provider's signed webhooks -> ``kyc.status``.

``python -m streams.kyc``; docs/notifications.md has the status mapping and the settings.
"""
