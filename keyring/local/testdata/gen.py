#!/usr/bin/env python3
"""Generates the local keyring test vectors from docs/FORMAT.md ("Local
keyring key file"), independently of the Go code, with Python's hashlib
and the cryptography package. Run from keyring/local/testdata:

    python3 gen.py

Output: key-none.json, key-scrypt.json (passphrase in PASSPHRASE) and
vectors/*.txt, each a list of "name: value" lines starting with expect:.
"""
import base64, hashlib, hmac, json
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes

MASTER = bytes(range(32))
PASSPHRASE = b"correct horse battery staple"
SALT = bytes(range(0x40, 0x50))
SEAL_NONCE = bytes(range(0x60, 0x6c))
N, R, P = 1024, 8, 1  # small N keeps the test fast; Create uses 32768
DK = bytes(range(0xa0, 0xc0))
NONCE = bytes(range(0x80, 0x8c))
CTX = b'{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}'
CTX2 = b'{"kmsfs":"v1","volume":"ffeeddccbbaa99887766554433221100"}'

b64 = lambda b: base64.b64encode(b).decode()
key_id = hmac.new(MASTER, b"kmsfs local key id", hashlib.sha256).digest()[:8]

with open("key-none.json", "w") as f:
    f.write(json.dumps({"kmsfs_local_key": 1, "key_id": key_id.hex(), "kdf": "none",
                        "key": b64(MASTER)}, separators=(",", ":")) + "\n")

kek = hashlib.scrypt(PASSPHRASE, salt=SALT, n=N, r=R, p=P, dklen=32, maxmem=64 << 20)
sealed = SEAL_NONCE + AESGCM(kek).encrypt(SEAL_NONCE, MASTER, b"kmsfs local key v1")
with open("key-scrypt.json", "w") as f:
    f.write(json.dumps({"kmsfs_local_key": 1, "key_id": key_id.hex(), "kdf": "scrypt",
                        "scrypt": {"n": N, "r": R, "p": P, "salt": b64(SALT)},
                        "sealed": b64(sealed)}, indent=1) + "\n")

kek2 = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
            info=b"kmsfs local wrap v1").derive(MASTER)

def wrap(dk, ctx, nonce=NONCE, kid=key_id):
    return b"\x01" + kid + nonce + AESGCM(kek2).encrypt(nonce, dk, b"kmsfs local v1" + ctx)

good = wrap(DK, CTX)
assert len(good) == 69

def vector(name, expect, keyfile, wrapped, ctx, dk=None):
    with open("vectors/" + name + ".txt", "w") as f:
        f.write("expect: %s\n" % expect)
        f.write("keyfile: %s\n" % keyfile)
        f.write("passphrase: %s\n" % PASSPHRASE.decode())
        f.write("context: %s\n" % ctx.decode())
        f.write("wrapped: %s\n" % wrapped.hex())
        if dk is not None:
            f.write("key: %s\n" % dk.hex())

vector("none_ok", "ok", "key-none.json", good, CTX, DK)
vector("scrypt_ok", "ok", "key-scrypt.json", good, CTX, DK)
vector("empty_context_ok", "ok", "key-none.json", wrap(DK, b""), b"", DK)
vector("other_context", "unwrap error", "key-none.json", good, CTX2)
vector("tag_flipped", "unwrap error", "key-none.json", good[:-1] + bytes([good[-1] ^ 1]), CTX)
vector("ciphertext_flipped", "unwrap error", "key-none.json", good[:21] + bytes([good[21] ^ 0x80]) + good[22:], CTX)
vector("other_key_id", "unwrap error", "key-none.json", wrap(DK, CTX, kid=bytes(8)), CTX)
vector("version_2", "unwrap error", "key-none.json", b"\x02" + good[1:], CTX)
vector("truncated", "unwrap error", "key-none.json", good[:-1], CTX)
