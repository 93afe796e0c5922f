"""Secrets at rest: Fernet encryption with versioned keys (`PAYCORE_ENCRYPTION_KEYS`).

`v2:<key>,v1:<key>`: the first key encrypts; every listed key can decrypt its own version.
Rotation: prepend a new version, run `paycore admin rotate-encryption-key`, then drop the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken


class SecretStr:
    """A string whose repr and str are masked (design.md: secrets are a type)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: str
    key_version: str


class Keyring:
    def __init__(self, spec: str) -> None:
        self._keys: dict[str, Fernet] = {}
        self._primary = ""
        for raw in spec.split(","):
            part = raw.strip()
            if not part:
                continue
            version, sep, key = part.partition(":")
            if not sep or not version or not key:
                raise ValueError("each key must be written version:fernet-key")
            if version in self._keys:
                raise ValueError(f"key version {version} listed twice")
            self._keys[version] = Fernet(key.encode())
            if not self._primary:
                self._primary = version
        if not self._primary:
            raise ValueError("at least one key is required")

    @property
    def primary_version(self) -> str:
        return self._primary

    def versions(self) -> list[str]:
        return list(self._keys)

    def seal(self, secret: str) -> Sealed:
        token = self._keys[self._primary].encrypt(secret.encode())
        return Sealed(token.decode(), self._primary)

    def open(self, sealed: Sealed) -> SecretStr:
        key = self._keys.get(sealed.key_version)
        if key is None:
            raise KeyError(f"no key for version {sealed.key_version!r}")
        try:
            return SecretStr(key.decrypt(sealed.ciphertext.encode()).decode())
        except InvalidToken as exc:
            raise ValueError("ciphertext does not match its key version") from exc

    def reseal(self, sealed: Sealed) -> Sealed:
        """Re-encrypt under the primary key (rotation)."""
        if sealed.key_version == self._primary:
            return sealed
        return self.seal(self.open(sealed).reveal())
