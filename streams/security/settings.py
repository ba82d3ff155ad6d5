"""The security layer's settings, from the environment (prefix ``NEXUS_SECURITY_``), with defaults that run locally:
a SoftHSM2 token under the data directory (``NEXUS_DATA_DIR``, default ``.local``) that the key manager creates
the first time it starts.

A real HSM (CloudHSM, Luna, ...) is its PKCS#11 module, its token label and its user PIN::

    NEXUS_SECURITY_PKCS11_MODULE=/opt/cloudhsm/lib/libcloudhsm_pkcs11.so
    NEXUS_SECURITY_TOKEN_LABEL=hsm1
    NEXUS_SECURITY_PIN_FILE=/run/secrets/hsm-pin     # or NEXUS_SECURITY_PIN (a secret: never logged)
    NEXUS_SECURITY_SOFTHSM_DEV_TOKEN=false           # never try to create a token on it

Nothing secret has a default: the dev token's PINs are random, written owner-only under the data directory.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.keys import KeyPolicy
from streams.settings import get_settings

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class SecuritySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_SECURITY_", env_file=".env", extra="ignore")

    # --- the HSM (PKCS#11)
    pkcs11_module: str = SOFTHSM_MODULE
    token_label: str = "nexus-dev"
    pin: SecretStr | None = None  # the token's user PIN; else read from pin_file
    pin_file: Path | None = None  # default: <hsm_dir>/user.pin (the dev token's)
    # Create the SoftHSM2 token (config, token directory, random PINs) and the keys when they are missing.
    softhsm_dev_token: bool = True
    # Where the dev token, the key registry, the backups and the dev custodian shares live; default <data_dir>/hsm.
    hsm_dir: Path | None = None

    # --- key lifecycle (spec §4.1; domain.keys)
    key_rotation_days: float = Field(default=90.0, gt=0)
    backup_every_s: float = Field(default=7200.0, gt=0)
    backups_kept: int = Field(default=24, ge=1)  # older backup files are removed after a new one is written
    # The master key is split into this many custodian shares, any `custodian_threshold` of which rebuild it.
    custodian_shares: int = Field(default=5, ge=2, le=255)
    custodian_threshold: int = Field(default=3, ge=2, le=255)
    # Where new master versions' shares are written (owner-only). Dev: under hsm_dir; production: a hand-off
    # location the custodians collect from (each takes one share away).
    custodian_dir: Path | None = None
    # The key manager service: how often it checks rotations and backups.
    tick_every_s: float = Field(default=60.0, gt=0)

    # --- governance (streams.security governance service, docs/governance.md): the signer set's public keys
    signers_file: Path | None = None  # default: <data_dir>/governance/signers.json

    @property
    def hsm_path(self) -> Path:
        return self.hsm_dir if self.hsm_dir is not None else get_settings().data_dir / "hsm"

    @property
    def user_pin_path(self) -> Path:
        return self.pin_file if self.pin_file is not None else self.hsm_path / "user.pin"

    @property
    def custodian_path(self) -> Path:
        return self.custodian_dir if self.custodian_dir is not None else self.hsm_path / "custodians"

    @property
    def signers_path(self) -> Path:
        return (
            self.signers_file
            if self.signers_file is not None
            else get_settings().data_dir / "governance" / "signers.json"
        )

    @property
    def softhsm(self) -> bool:
        return Path(self.pkcs11_module).name == Path(SOFTHSM_MODULE).name

    @property
    def policy(self) -> KeyPolicy:
        return KeyPolicy(timedelta(days=self.key_rotation_days), timedelta(seconds=self.backup_every_s))


@lru_cache(maxsize=1)
def get_security_settings() -> SecuritySettings:
    return SecuritySettings()
