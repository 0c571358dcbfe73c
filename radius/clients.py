"""The gateways allowed to ask: matched by source address, each with its own shared secret.

A request from an address no client covers is dropped without a reply (RFC 2865 §3: a request
from a client without a shared secret is silently discarded), and counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import RadiusClientSettings, RadiusSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Client:
    name: str
    network: Network
    secret: bytes
    mode: str
    require_message_authenticator: bool
    first_factor: str


def _secret(home: Path, spec: RadiusClientSettings) -> bytes:
    if spec.secret:
        return spec.secret.encode("utf-8")
    path = Path(spec.secret_file)
    path = path if path.is_absolute() else home / path
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[[radius.clients]] {spec.name}: cannot read secret_file {path}: "
                          f"{exc.strerror}") from None
    if not secret:
        raise ConfigError(f"[[radius.clients]] {spec.name}: {path} is empty")
    return secret.encode("utf-8")


class ClientTable:
    """Clients by network; the most specific network that holds an address wins."""

    def __init__(self, clients: list[Client]) -> None:
        self._clients = sorted(clients, key=lambda c: c.network.prefixlen, reverse=True)

    @classmethod
    def from_settings(cls, home: Path, settings: RadiusSettings) -> ClientTable:
        clients = []
        for spec in settings.clients:
            try:
                network = ipaddress.ip_network(spec.address, strict=False)
            except ValueError:
                raise ConfigError(f"[[radius.clients]] {spec.name}: address {spec.address!r} is "
                                  "not an IP address or CIDR network") from None
            first = spec.first_factor or settings.first_factor
            if not first:
                raise ConfigError(f"[[radius.clients]] {spec.name}: no first factor: set "
                                  "[radius] first_factor to ldap, pam or none")
            clients.append(Client(spec.name, network, _secret(home, spec), spec.mode,
                                  spec.require_message_authenticator, first))
        return cls(clients)

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(self._clients)

    def find(self, address: str) -> Client | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        for client in self._clients:
            if ip.version == client.network.version and ip in client.network:
                return client
        return None
