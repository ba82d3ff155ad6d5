"""The HSM on a fresh machine: a SoftHSM2 development token (softhsm.py) and, ``python -m infra.hsm``, its keys."""
