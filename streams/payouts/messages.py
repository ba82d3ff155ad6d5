"""What a holder is told about a payout: subjects and texts with the exact amounts, the payout account masked."""

from __future__ import annotations

from domain.money import KAUS_DECIMALS, MINOR_UNIT_EXPONENT, Currency

SUBJECT_MAX = 200
TEXT_MAX = 2000


def kaus_text(units: int) -> str:
    """K-AUS base units as K-AUS with every decimal: 1000000000 -> "1,000.000000"."""
    whole, frac = divmod(units, 10**KAUS_DECIMALS)
    return f"{whole:,}.{frac:0{KAUS_DECIMALS}d}"


def fiat_text(amount_minor: int, currency: Currency) -> str:
    """Minor units in the currency's own decimals: 15000 USD -> "150.00 USD", 15000 KRW -> "15,000 KRW"."""
    exp = MINOR_UNIT_EXPONENT[currency]
    if exp == 0:
        return f"{amount_minor:,} {currency}"
    whole, frac = divmod(amount_minor, 10**exp)
    return f"{whole:,}.{frac:0{exp}d} {currency}"


def masked(payout_account: str) -> str:
    """The payout account as a holder recognises it without a message giving it away: its last four characters.
    An account already masked (``****1623``: sealing is on, streams.security.envelope.mask_account) shows its tail."""
    if payout_account.startswith("****"):
        tail = payout_account[4:]
        return f"ending {tail}" if tail else "on file"
    tail = payout_account.strip()[-4:]
    return f"ending {tail}" if len(payout_account.strip()) > 8 else "on file"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def completed(kaus_units: int, amount_minor: int, currency: Currency, provider: str, account: str) -> tuple[str, str]:
    subject = f"Payout completed: {fiat_text(amount_minor, currency)}"
    text = (
        f"{kaus_text(kaus_units)} K-AUS paid out as {fiat_text(amount_minor, currency)} to your {provider} account "
        f"{masked(account)}."
    )
    return _clip(subject, SUBJECT_MAX), _clip(text, TEXT_MAX)


def failed(kaus_units: int | None, provider: str, account: str, reason: str) -> tuple[str, str]:
    amount = "" if kaus_units is None else f" of {kaus_text(kaus_units)} K-AUS"
    subject = f"Payout failed{amount}"
    text = (
        f"Your payout{amount} to your {provider} account {masked(account)} failed: {reason.rstrip('. ')}. "
        "Nothing was debited; the K-AUS stay in your balance."
    )
    return _clip(subject, SUBJECT_MAX), _clip(text, TEXT_MAX)


def waiting(kaus_units: int, provider: str, account: str, kyc: str) -> tuple[str, str]:
    subject = "Payout waiting for identity verification"
    text = (
        f"A payout of {kaus_text(kaus_units)} K-AUS to your {provider} account {masked(account)} is due, but your "
        f"identity verification is {kyc}. It is paid as soon as you are verified."
    )
    return _clip(subject, SUBJECT_MAX), _clip(text, TEXT_MAX)


def paused(kaus_units: int, provider: str, account: str) -> tuple[str, str]:
    subject = "Payout on hold: payouts are paused"
    text = (
        f"A payout of {kaus_text(kaus_units)} K-AUS to your {provider} account {masked(account)} is due, but payouts "
        "are paused for the moment. It is paid as soon as they resume; the K-AUS stay in your balance meanwhile."
    )
    return _clip(subject, SUBJECT_MAX), _clip(text, TEXT_MAX)


def approval_pending(kaus_units: int, provider: str, account: str) -> tuple[str, str]:
    subject = "Payout waiting for approval"
    text = (
        f"A payout of {kaus_text(kaus_units)} K-AUS to your {provider} account {masked(account)} is due. Payouts of "
        "this size are approved by the platform's signers first: it is paid once they approve it. The K-AUS stay in "
        "your balance meanwhile."
    )
    return _clip(subject, SUBJECT_MAX), _clip(text, TEXT_MAX)
