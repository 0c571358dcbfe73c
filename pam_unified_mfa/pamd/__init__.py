"""`unified-mfa pamd`: the local daemon behind the PAM module (docs/pam-protocol.md)."""
