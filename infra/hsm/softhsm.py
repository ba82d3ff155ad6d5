"""A SoftHSM2 token for development and tests, created on a fresh machine (``infra/install-system-deps.sh`` installs
SoftHSM2; the key manager calls :func:`ensure_dev_token` when the dev token is configured and missing).

Under ``hsm_dir`` (default ``<data_dir>/hsm``, owner-only):

* ``softhsm2.conf`` — SoftHSM2's configuration, pointing at ``tokens/`` below (``SOFTHSM2_CONF`` names it);
* ``tokens/`` — the token's objects (SoftHSM2 keeps sensitive keys encrypted under the user PIN);
* ``user.pin`` and ``so.pin`` — random PINs, mode 0600, never in the repo and never logged.

``softhsm2-util --init-token`` takes PINs on its command line (visible to every process on the machine) or from a
terminal; we give it a pseudo-terminal and type them, so no PIN is ever in an argument list.
"""

from __future__ import annotations

import logging
import os
import pty
import secrets
import shutil
import subprocess
from pathlib import Path

from infra.files import private_dir, write_private

log = logging.getLogger("nexus.hsm")

INIT_TIMEOUT_S = 30.0


def conf_path(hsm_dir: Path) -> Path:
    return hsm_dir / "softhsm2.conf"


def ensure_conf(hsm_dir: Path) -> Path:
    """SoftHSM2's configuration for the token directory under ``hsm_dir`` (written once, kept as it is)."""
    conf = conf_path(hsm_dir)
    tokens = private_dir(hsm_dir / "tokens")
    if not conf.exists():
        text = (
            "# Written by infra/hsm/softhsm.py: the NEXUS-X development token.\n"
            f"directories.tokendir = {tokens.resolve()}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        write_private(conf, text.encode())
    return conf


def read_or_create_pin(path: Path) -> str:
    """The PIN in ``path``; a new random one (owner-only) when the file does not exist."""
    if path.exists():
        pin = path.read_text(encoding="utf-8").strip()
        if len(pin) < 4:
            raise ValueError(f"{path} holds no usable PIN")
        return pin
    pin = secrets.token_urlsafe(24)
    write_private(path, pin.encode())
    return pin


def init_token(conf: Path, label: str, so_pin: str, user_pin: str) -> None:
    """``softhsm2-util --init-token --free`` with the PINs typed into a pseudo-terminal."""
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise RuntimeError("softhsm2-util not found: run infra/install-system-deps.sh")
    parent, child = pty.openpty()
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    try:
        proc = subprocess.Popen(
            [tool, "--init-token", "--free", "--label", label],
            stdin=child,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # the pty is its terminal, not ours
        )
        os.close(child)
        child = -1
        os.write(parent, f"{so_pin}\n{so_pin}\n{user_pin}\n{user_pin}\n".encode())
        _, err = proc.communicate(timeout=INIT_TIMEOUT_S)
    finally:
        if child >= 0:
            os.close(child)
        os.close(parent)
    if proc.returncode != 0:  # its messages carry no PIN (it echoes '*'), only what went wrong
        raise RuntimeError(f"softhsm2-util --init-token failed ({proc.returncode}): {err.decode(errors='replace')}")
    log.info("SoftHSM2 token %r initialised under %s", label, conf.parent)


def ensure_dev_token_files(hsm_dir: Path, user_pin_path: Path) -> tuple[Path, str, str]:
    """The config and both PINs of the dev token (created when missing): (conf, SO PIN, user PIN)."""
    private_dir(hsm_dir)
    conf = ensure_conf(hsm_dir)
    so_pin = read_or_create_pin(hsm_dir / "so.pin")
    user_pin = read_or_create_pin(user_pin_path)
    return conf, so_pin, user_pin
