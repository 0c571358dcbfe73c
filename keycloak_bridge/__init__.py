"""REST bridge for the Keycloak authenticator: maps its form posts onto the core dialogue."""
