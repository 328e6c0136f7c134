"""Link encryption for a mesh with a password.

Owns key agreement and the per-direction SecretBox ciphers.  It must never see
sockets or frames' framing, and never reuse a (key, nonce) pair.

Each link does an ephemeral X25519 exchange.  The session secret is
BLAKE2b(shared secret || both public keys, keyed with the password key), split
into one key per direction, so a peer without the password derives other keys
and every frame it sends or receives fails authentication.  The password key is
Argon2id of the password (libsodium's interactive limits: ~50 ms and 64 MiB,
once per process): a stranger who records one encrypted handshake frame and
guesses passwords offline pays that for every guess, not one hash.  Nonces are
implicit sequence numbers (0, 1, 2, ... per direction) that are never sent, so a
replayed, reordered, dropped or truncated frame fails to decrypt.
"""

from __future__ import annotations

import functools
import struct

import nacl.bindings as _nb
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.pwhash

PUBLIC_KEY_LEN = 32
_NONCE_PREFIX = b"\x00" * (_nb.crypto_secretbox_NONCEBYTES - 8)
_pack_seq = struct.Struct(">Q").pack


class AuthenticationError(Exception):
    """A frame failed to decrypt: wrong password, or a tampered/replayed frame."""


# Peers share nothing before the handshake but the password, so the salt is fixed.
PASSWORD_SALT = b"meshraft-mesh-pw"  # 16 bytes, Argon2id's salt size
PASSWORD_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
PASSWORD_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


@functools.lru_cache(maxsize=8)  # one derivation per password per process
def password_key(password: bytes) -> bytes:
    return nacl.pwhash.argon2id.kdf(32, password, PASSWORD_SALT,
                                    opslimit=PASSWORD_OPSLIMIT, memlimit=PASSWORD_MEMLIMIT)


class Ephemeral:
    """One link's ephemeral X25519 key pair."""

    def __init__(self) -> None:
        self._sk = nacl.public.PrivateKey.generate()
        self.public = bytes(self._sk.public_key)

    def session(self, peer_public: bytes, pw_key: bytes) -> tuple[SecretBoxCipher, SecretBoxCipher]:
        """(sender, receiver) ciphers for this side of the link."""
        if len(peer_public) != PUBLIC_KEY_LEN:
            raise AuthenticationError("peer public key has the wrong length")
        if peer_public == self.public:
            raise AuthenticationError("peer reflected our own public key")
        try:
            shared = _nb.crypto_scalarmult(bytes(self._sk), peer_public)
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError) as exc:
            raise AuthenticationError(f"key agreement failed: {exc}") from exc
        lo, hi = sorted((self.public, peer_public))
        okm = nacl.hash.blake2b(
            shared + lo + hi, digest_size=64, key=pw_key, person=b"meshraft-link",
            encoder=nacl.encoding.RawEncoder,
        )
        k_lo, k_hi = okm[:32], okm[32:]
        if self.public == lo:
            return SecretBoxCipher(k_lo), SecretBoxCipher(k_hi)
        return SecretBoxCipher(k_hi), SecretBoxCipher(k_lo)


class SecretBoxCipher:
    """XSalsa20-Poly1305 in one direction with an implicit 64-bit sequence nonce."""

    __slots__ = ("_key", "seq")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.seq = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = _NONCE_PREFIX + _pack_seq(self.seq)
        self.seq += 1
        return _nb.crypto_secretbox_easy(plaintext, nonce, self._key)

    def decrypt(self, ciphertext: bytes) -> bytes:
        nonce = _NONCE_PREFIX + _pack_seq(self.seq)
        try:
            plain = _nb.crypto_secretbox_open_easy(ciphertext, nonce, self._key)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, TypeError) as exc:
            raise AuthenticationError(
                f"frame {self.seq} failed authentication (wrong password, or a replayed, "
                "reordered, truncated or altered frame)"
            ) from exc
        self.seq += 1
        return plain


def read_password_file(path: str) -> bytes:
    """The mesh password from a file (one trailing newline stripped); ValueError if empty."""
    with open(path, "rb") as f:
        data = f.read()
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if not data:
        raise ValueError(f"mesh password file {path} is empty")
    return data
