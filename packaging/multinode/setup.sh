#!/bin/sh
# The first start of a two-node site, step by step. Read it and run the parts by hand on the
# hosts named in the comments; the package runs none of it.
set -eu

# On the database host: a role and a database for the service.
#   sudo -u postgres createuser --pwprompt unified_mfa
#   sudo -u postgres createdb --owner unified_mfa unified_mfa

# On node 1: the settings (this directory's unified-mfa.toml), then the schema and the key.
install -d -m 0700 /var/lib/unified-mfa
install -m 0600 unified-mfa.toml /var/lib/unified-mfa/unified-mfa.toml
unified-mfa init --public-url https://mfa.example.org
sha256sum /var/lib/unified-mfa/unified-mfa.key    # note the checksum

# Copy the settings and the key file to node 2 (over ssh; never through a shared folder).
#   scp -p /var/lib/unified-mfa/unified-mfa.toml /var/lib/unified-mfa/unified-mfa.key node2:/tmp/
# On node 2:
#   install -d -m 0700 /var/lib/unified-mfa
#   install -m 0600 /tmp/unified-mfa.toml /tmp/unified-mfa.key /var/lib/unified-mfa/
#   sha256sum /var/lib/unified-mfa/unified-mfa.key   # the same checksum as on node 1

# On both nodes:
#   systemctl enable --now unified-mfa.service unified-mfa-radius.service
#   curl -fsS https://localhost:8443/healthz  # {"status":"ok"}
