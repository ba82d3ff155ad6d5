"""The KYC receiver's settings, from the environment only (prefix ``NEXUS_KYC_``).

The webhook secret and the applicant API's app token and secret key have no default: the receiver refuses to start
without them (a real one never lives in the repository; the demo generates dev-only values,
``devtools.kyc_sim.dev_secrets``).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRETS = ("webhook_secret", "app_token", "app_secret_key")


class KycSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_KYC_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"  # the webhook listener (behind the TLS-terminating proxy the provider calls)
    port: int = Field(default=19485, ge=0, le=65535)
    webhook_secret: SecretStr | None = None  # the provider webhook's secret key (X-Payload-Digest)
    app_token: SecretStr | None = None  # X-App-Token of the applicant API
    app_secret_key: SecretStr | None = None  # signs applicant API requests (X-App-Access-Sig)
    applicant_api_url: str = "http://127.0.0.1:19486"  # real: https://api.sumsub.com; local: devtools.kyc_sim
    # Webhook types that mean "the verification lapsed" (-> EXPIRED), comma-separated (streams/kyc/sumsub.py).
    expired_types: str = "applicantExpired"
    api_timeout_s: float = Field(default=3.0, gt=0)
    # How long a webhook waits for the broker's ack before it is answered 503 (the provider re-sends it; Sumsub
    # gives up on an answer after 5 s).
    produce_timeout_s: float = Field(default=4.0, gt=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_concurrent: int = Field(default=32, ge=1)  # webhooks handled at once; more are answered 503

    def missing_secrets(self) -> list[str]:
        return [f"NEXUS_KYC_{name.upper()}" for name in SECRETS if not _value(getattr(self, name))]

    @property
    def expired_type_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.expired_types.split(",") if name.strip())


def _value(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value()


def secret_bytes(secret: SecretStr | None) -> bytes:
    return _value(secret).encode()
