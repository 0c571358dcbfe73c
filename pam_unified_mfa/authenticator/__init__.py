"""The reference Protect authenticator: enrolls from the QR, shows codes, answers pushes."""
