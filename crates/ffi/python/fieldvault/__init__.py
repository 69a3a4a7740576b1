"""The Fieldvault SDK for Python (docs/sdk.md, section 6): `Vault`, `Keystore`,
`ConflictMerger`, `ProgressListener`, and the typed `FieldvaultError` exceptions."""

from .fieldvault import *  # noqa: F401,F403
