"""The security layer (issue 18): HSM keys over PKCS#11, the signed audit log, multi-sig governance."""
