"""RADIUS responder for VPN gateways: maps Access-Request/Challenge onto the core dialogue."""
