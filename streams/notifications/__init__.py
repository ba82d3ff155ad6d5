"""Holder notifications (issue 17 item 5): the sender of ``notifications.holders`` over e-mail, SMS and push.

``python -m streams.notifications``; docs/notifications.md has the channels, retries, once-only and masking.
"""
