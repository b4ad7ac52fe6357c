"""Encrypting every payload Sutra hands to Temporal, so customer data is never stored there
in clear: names, phones and emails travel in workflow inputs, activity results, queries,
memos, summaries and failure messages.

AES-256/192/128-GCM with a fresh 12-byte nonce per payload; the key id rides in the
payload's metadata (and is bound to the ciphertext as associated data), so keys rotate by
putting a new key first: it encrypts from then on, and every listed key still decrypts
what was written before. Payloads that are not encrypted (histories recorded before
encryption was switched on) decode untouched. Temporal never runs a codec on search
attributes; Sutra's hold ids only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from config.settings import Settings, parse_payload_keys

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """A payload cannot be decrypted: its key is not configured, or it was tampered with."""


class EncryptionCodec(PayloadCodec):
    """AES-GCM payload codec; the first key encrypts, every key decrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self._keys = {kid: AESGCM(key) for kid, key in keys}
        if len(self._keys) != len(keys):
            raise ValueError("payload key ids must be unique")
        self.key_id = keys[0][0]
        self._encrypting = self._keys[self.key_id]

    @classmethod
    def from_spec(cls, spec: str) -> EncryptionCodec:
        """From ``"kid1:base64key,kid2:base64key"`` (what ``SUTRA_PAYLOAD_KEYS`` holds)."""
        return cls(parse_payload_keys(spec))

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        kid = self.key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._encrypting.encrypt(nonce, payload.SerializeToString(), kid)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: kid}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on, or never encoded by us
        raw_kid = payload.metadata.get(KEY_ID)
        if raw_kid is None:
            raise PayloadKeyError(f"encrypted payload without {KEY_ID!r} metadata")
        kid = raw_kid.decode(errors="replace")
        aesgcm = self._keys.get(kid)
        if aesgcm is None:
            raise PayloadKeyError(
                f"payload encrypted with key id {kid!r}, which is not configured "
                f"(SUTRA_PAYLOAD_KEYS has {', '.join(repr(k) for k in self._keys)}): "
                "keep every key that wrote data still in use in the list"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            if len(nonce) != NONCE_BYTES:
                raise InvalidTag
            plain = aesgcm.decrypt(nonce, sealed, raw_kid)
        except InvalidTag:
            raise PayloadKeyError(
                f"payload under key id {kid!r} does not decrypt: wrong key material for "
                "that id, or the payload was altered"
            ) from None
        return Payload.FromString(plain)


def codec_for(settings: Settings) -> EncryptionCodec | None:
    keys = settings.payload_key_list
    return EncryptionCodec(keys) if keys else None


def data_converter(settings: Settings) -> DataConverter:
    """Sutra's converter: pydantic, plus encryption when payload keys are configured.

    With encryption on, failure messages and stack traces move into an encrypted payload
    too: a validation error quoting a customer's email must not sit in clear in history.
    """
    codec = codec_for(settings)
    return converter_with(codec)


def converter_with(codec: PayloadCodec | None) -> DataConverter:
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
