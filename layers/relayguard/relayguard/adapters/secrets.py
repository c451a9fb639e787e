"""The SSH private key from Secrets Manager, through Powertools Parameters (cached across warm starts)."""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters

from relayguard.errors import RelayGuardError

#: Seconds a warm Lambda reuses the key before asking Secrets Manager again (rotation picks up within this).
KEY_MAX_AGE = 300


class SecretsManagerKeyStore:
    def __init__(self, secret_id: str, provider: parameters.SecretsProvider | None = None) -> None:
        self.secret_id = secret_id
        self.provider = provider or parameters.SecretsProvider()

    def ssh_key(self) -> str:
        try:
            value = self.provider.get(self.secret_id, max_age=KEY_MAX_AGE)
        except parameters.exceptions.GetParameterError as exc:
            # The message names the secret, never its value.
            raise RelayGuardError(f"could not read the SSH key secret {self.secret_id!r}") from exc
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str) or "PRIVATE KEY" not in value:
            raise RelayGuardError(f"secret {self.secret_id!r} does not hold a PEM/OpenSSH private key")
        return value
