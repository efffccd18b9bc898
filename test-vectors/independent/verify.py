#!/usr/bin/env python3
"""Independent verifier for the hush test vectors.

Written from docs/SPEC.md and test-vectors/README.md only: it shares no code with the
Rust crates. Primitives come from `cryptography` and, for ML-KEM-768, the pure-Python
`kyber-py` (a different implementation from the Rust side's libcrux).  Every positive value in the vector files is recomputed from its inputs and
compared byte for byte; every negative entry must be refused with exactly the stated error
class, and (for session and group rejects) leave the receiver's state unchanged.

Usage: verify.py [VECTORS_DIR]        (default: ../vectors next to this file)

Where SPEC.md is silent this file makes a choice, marked "SPEC is silent", "not named by
SPEC" or "not in README" where it is made: .proto field names (taken from wire.json), which nested fields
are `bytes` holding an encoded message, error classes for refusals SPEC does not name,
the group `random` layout, what a newcomer remembers for replay detection, and the order
of the attachment reader's checks (the attachment.json mutations come from its description).
"""
import copy
import hashlib
import hmac
import json
import os
import sys
import traceback

from cryptography.exceptions import InvalidSignature as _CryptoBadSig
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.exceptions import InvalidTag
from kyber_py.ml_kem import ML_KEM_768                  # FIPS 203, pure Python


class HushError(Exception):
    """A refusal with one of the error classes of SPEC §7.6 / §11.1 / §13."""

    def __init__(self, cls, detail=""):
        super().__init__(f"{cls}: {detail}" if detail else cls)
        self.cls = cls


# ---------------------------------------------------------------- §2 primitives
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493   # Ed25519 group order
D = -121665 * pow(121666, -1, P) % P                     # Edwards curve constant d
SQRT_M1 = pow(2, (P - 1) // 4, P)                        # a square root of -1

def ed_decode(enc):
    """RFC 8032 §5.1.3 point decoding, strict: None unless enc is a canonical encoding."""
    if len(enc) != 32:
        return None
    y = int.from_bytes(enc, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:                                    # non-canonical y
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * SQRT_M1 % P
    if x * x % P != x2:                           # not on the curve
        return None
    if x == 0 and sign:                           # "-0" is non-canonical
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y)

def ed_add(a, b):
    """Affine twisted-Edwards addition (complete for Ed25519)."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)

def ed_small_order(pt):
    q = pt
    for _ in range(3):                            # [8]P == identity  <=>  P has small order
        q = ed_add(q, q)
    return q == (0, 1)

def valid_point(enc):
    pt = ed_decode(enc)
    return pt is not None and not ed_small_order(pt)

def ed_mul(k, pt):
    """[k]P by double-and-add."""
    r, q = (0, 1), pt
    while k:
        if k & 1:
            r = ed_add(r, q)
        q, k = ed_add(q, q), k >> 1
    return r

_prime_order_cache = {}

def valid_public_key(enc):
    """§2/§3: a canonical point of prime order L: [L]A is the identity."""
    if enc not in _prime_order_cache:
        pt = ed_decode(enc)
        _prime_order_cache[enc] = (pt is not None and not ed_small_order(pt)
                                   and ed_mul(L, pt) == (0, 1))
    return _prime_order_cache[enc]

def check_identity_key(key):
    """§3: an identity key is a canonical Ed25519 point of prime order (class Decode)."""
    if len(key) != 32 or not valid_public_key(key):
        raise HushError("Decode", "invalid identity key")
    return key

def ed_public(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()

def sign(seed, msg):
    return Ed25519PrivateKey.from_private_bytes(seed).sign(msg)

def verify(pub, msg, sig):
    """Strict Ed25519 verification of §2: RFC 8032 plus canonical/small-order/S<L checks."""
    if len(pub) != 32 or len(sig) != 64 or not valid_public_key(pub) or not valid_point(sig[:32]):
        return False
    if int.from_bytes(sig[32:], "little") >= L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except (_CryptoBadSig, ValueError):
        return False

def ed_to_x25519_public(pub):
    """§3 birational map u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, -1, P) % P).to_bytes(32, "little")

def ed_to_x25519_private(seed):
    return hashlib.sha512(seed).digest()[:32]

def x_public(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()

def dh(priv, pub, cls="NonContributory"):
    """§2 DH: X25519 that fails on an all-zero output."""
    try:
        out = X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError:                            # OpenSSL refuses an all-zero result itself
        raise HushError(cls, "low-order public key")
    if out == bytes(32):
        raise HushError(cls, "all-zero DH output")
    return out

def hmac256(k, m):
    return hmac.new(k, m, hashlib.sha256).digest()

def hkdf(salt, ikm, info, n):
    prk = hmac256(salt, ikm)
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac256(prk, t + info + bytes([i]))
        out, i = out + t, i + 1
    return out[:n]

def aead_seal(k, n, ad, p):
    return ChaCha20Poly1305(k).encrypt(n, p, ad)

def aead_open(k, n, ad, c, cls="Authentication"):
    try:
        return ChaCha20Poly1305(k).decrypt(n, c, ad)
    except InvalidTag:
        raise HushError(cls, "AEAD tag does not verify")

def u32be(n):
    return n.to_bytes(4, "big")


# ---------------------------------------------------------------- §7 KDFs
# ML-KEM-768 (FIPS 203) from kyber-py: keys from a 64-byte seed d ‖ z (§3), encapsulation
# with the 32 bytes m given (the initiator's recorded randomness), and decapsulation.
KEM_PK_LEN, KEM_CT_LEN, Q = 1184, 1088, 3329

def kem_key_valid(ek):
    """§3: 1,184 bytes whose 12-bit coefficients (first 1,152 bytes) are all below q."""
    if len(ek) != KEM_PK_LEN:
        return False
    for i in range(0, 1152, 3):
        if ek[i] | (ek[i + 1] & 0x0F) << 8 >= Q or ek[i + 1] >> 4 | ek[i + 2] << 4 >= Q:
            return False
    return True

def kem_keys(seed):
    return ML_KEM_768.key_derive(seed)              # (encapsulation key, decapsulation key)

def kem_encaps(ek, m):
    ss, ct = ML_KEM_768._encaps_internal(ek, m)     # FIPS 203 Algorithm 17, ML-KEM.Encaps_internal
    return ct, ss

def kem_decaps(dk, ct):
    return ML_KEM_768.decaps(dk, ct)

def kdf_rk(rk, dh_out):
    okm = hkdf(rk, dh_out, b"hush root v1", 64)
    return okm[:32], okm[32:]

def kdf_ck(ck):
    return hmac256(ck, b"\x02"), hmac256(ck, b"\x01")      # (CK', MK)

def message_keys(mk, info=b"hush message v1"):
    okm = hkdf(bytes(32), mk, info, 44)
    return okm[:32], okm[32:]


# ---------------------------------------------------------------- §10 safety numbers
def fingerprint(ident, key):
    h = hashlib.sha512(b"\x00\x00" + key + ident).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    return h[:32]

def fp_digits(fp):
    return "".join("%05d" % (int.from_bytes(fp[5 * c:5 * c + 5], "big") % 100000) for c in range(6))

def safety_number(id_a, key_a, id_b, key_b):
    parts = sorted([(fp_digits(f), f) for f in (fingerprint(id_a, key_a), fingerprint(id_b, key_b))])
    return parts[0][0] + parts[1][0], b"\x00" + parts[0][1] + parts[1][1]


# ---------------------------------------------------------------- §11.1 sealing
def seal(storage_key, label, salt, pt):
    okm = hkdf(salt, storage_key, b"hush seal v1" + label, 44)
    return b"\x01" + salt + aead_seal(okm[:32], okm[32:], b"\x01" + label, pt)

def unseal(storage_key, label, blob):
    if len(blob) < 49:
        raise HushError("Malformed")
    if blob[0] != 1:
        raise HushError("UnsupportedVersion")
    okm = hkdf(blob[1:33], storage_key, b"hush seal v1" + label, 44)
    return aead_open(okm[:32], okm[32:], b"\x01" + label, blob[33:], cls="Decrypt")


# ---------------------------------------------------------------- §9 / §13 protobuf
# Field names: SPEC is silent (it gives bytes, not .proto names); these are wire.json's.
# A field is (number, name, kind, options).  kind: "u32", "u64" (varints), "bytes", or a
# message type name.  options: "opt" (proto3 optional: present iff set), "rep" (repeated),
# "oneof", "ik" (identity key, §3), an int n (bytes of exactly n), "ct" (>= 16 bytes),
# "kempk" (an ML-KEM-768 public key, §3), "kemct" (empty or a 1,088-byte KEM ciphertext),
# "req" (message field that must be present), "ver" (must be 1), "role" (0 or 1), or a
# message name: a bytes field holding that message's canonical encoding (signed or
# authenticated as-is, e.g. the header bytes of §7.4), which is decoded strictly too.
S = {
    "Header": [(1, "version", "u32", "ver"), (2, "ratchet_key", "bytes", 32),
               (3, "previous_chain_length", "u32", ""), (4, "message_number", "u32", ""),
               (5, "pq", "PqHeader", "")],
    "PqHeader": [(1, "epoch", "u32", ""), (2, "mixed", "u32", ""), (3, "chunk_index", "u32", ""),
                 (4, "chunk", "bytes", "")],
    "RatchetMessage": [(1, "header", "bytes", "Header"), (2, "ciphertext", "bytes", "ct")],
    "SessionMessage": [(1, "ratchet", "RatchetMessage", "oneof"), (2, "prekey", "PrekeyMessage", "oneof")],
    "PrekeyMessage": [(1, "version", "u32", "ver"), (2, "identity_key", "bytes", "ik"),
                      (3, "base_key", "bytes", 32), (4, "signed_prekey_id", "u32", ""),
                      (5, "one_time_prekey_id", "u32", "opt"), (6, "message", "RatchetMessage", "req"),
                      (7, "kem_prekey_id", "u32", "opt"), (8, "kem_ciphertext", "bytes", "kemct")],
    "PrekeyBundle": [(1, "version", "u32", "ver"), (2, "identity_key", "bytes", "ik"),
                     (3, "signed_prekey_id", "u32", ""), (4, "signed_prekey", "bytes", 32),
                     (5, "signed_prekey_signature", "bytes", 64), (6, "one_time_prekey", "OneTimePrekey", ""),
                     (7, "kem_prekey", "KemPrekey", "")],
    "KemPrekey": [(1, "id", "u32", ""), (2, "key", "bytes", "kempk"), (3, "signature", "bytes", 64)],
    "OneTimePrekey": [(1, "id", "u32", ""), (2, "key", "bytes", 32)],
    "GroupMessageContent": [(1, "version", "u32", "ver"), (2, "group_id", "bytes", 32),
                            (3, "sender", "bytes", "ik"), (4, "epoch", "u64", ""), (5, "chain_id", "u32", ""),
                            (6, "iteration", "u32", ""), (7, "ciphertext", "bytes", "ct")],
    "GroupMessage": [(1, "content", "bytes", "GroupMessageContent"), (2, "signature", "bytes", 64)],
    "SenderKeyDistribution": [(1, "version", "u32", "ver"), (2, "group_id", "bytes", 32), (3, "epoch", "u64", ""),
                              (4, "chain_id", "u32", ""), (5, "iteration", "u32", ""),
                              (6, "chain_key", "bytes", 32), (7, "signing_key", "bytes", 32)],
    "Member": [(1, "identity_key", "bytes", "ik"), (2, "role", "u32", "role")],
    "Create": [(1, "members", "Member", "rep")],
    "Leave": [],
    "ControlContent": [(1, "version", "u32", "ver"), (2, "group_id", "bytes", 32), (3, "epoch", "u64", ""),
                       (4, "parent", "bytes", 32), (5, "signer", "bytes", "ik"),
                       (6, "create", "Create", "oneof"), (7, "add", "Member", "oneof"),
                       (8, "remove", "bytes", "oneof ik"), (9, "leave", "Leave", "oneof"),
                       (10, "promote", "bytes", "oneof ik"), (11, "demote", "bytes", "oneof ik")],
    "ControlMessage": [(1, "content", "bytes", "ControlContent"), (2, "signature", "bytes", 64)],
    "GroupInfoContent": [(1, "version", "u32", "ver"), (2, "group_id", "bytes", 32), (3, "epoch", "u64", ""),
                         (4, "head", "bytes", 32), (5, "members", "Member", "rep"), (6, "signer", "bytes", "ik")],
    "GroupInfo": [(1, "content", "bytes", "GroupInfoContent"), (2, "signature", "bytes", 64)],
}
MAX_MESSAGE_LEN = 262144 + 2048
PQ_CHUNK_LEN = 104
MAX_GROUP_WIRE = 512 * 1024
MAX_LEN = {"SessionMessage": MAX_MESSAGE_LEN, "PrekeyBundle": MAX_MESSAGE_LEN}

def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def read_varint(data, pos):
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise HushError("Decode", "truncated or overlong varint")
        b = data[pos]
        n, pos, shift = n | (b & 0x7F) << shift, pos + 1, shift + 7
        if not b & 0x80:
            if n >= 1 << 64:
                raise HushError("Decode", "varint over 64 bits")
            return n, pos

def encode(t, msg):
    """Canonical encoding (§9): increasing field order, defaults omitted, minimal varints."""
    out = b""
    for num, name, kind, opts in S[t]:
        if name not in msg or msg[name] is None:
            continue
        for v in (msg[name] if "rep" in str(opts) else [msg[name]]):
            if kind in ("u32", "u64"):
                if v == 0 and "opt" not in str(opts):
                    continue
                out += bytes([num << 3]) + varint(v)
            else:
                if kind != "bytes":
                    v = encode(kind, v)          # message field: present whenever set
                elif v == b"" and "opt" not in str(opts) and "oneof" not in str(opts):
                    continue
                out += bytes([num << 3 | 2]) + varint(len(v)) + v
    return out

def parse(t, data):
    """Generic strict parse: known fields, increasing order, right wire types."""
    fields, out, pos, last = {f[0]: f for f in S[t]}, {}, 0, 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        num, wt = key >> 3, key & 7
        if num not in fields:
            raise HushError("Decode", f"{t}: unknown field {num}")
        _, name, kind, opts = fields[num]
        rep = "rep" in str(opts)
        if num < last or (num == last and not rep):
            raise HushError("Decode", f"{t}: field {num} out of order or repeated")
        last = num
        if wt != (0 if kind in ("u32", "u64") else 2):
            raise HushError("Decode", f"{t}: wrong wire type for field {num}")
        v, pos = read_varint(data, pos)
        if kind in ("u32", "u64"):
            if kind == "u32" and v >= 1 << 32:
                raise HushError("Decode", f"{t}.{name} over u32")
        else:
            if pos + v > len(data):
                raise HushError("Decode", f"{t}.{name} truncated")
            v, pos = data[pos:pos + v], pos + v
            if kind != "bytes":
                v = parse(kind, v)
        if rep:
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    return out

def validate(t, msg):
    """The semantic checks of §9 and §13 on a parsed message."""
    oneofs = 0
    for num, name, kind, opts in S[t]:
        opts = str(opts)
        v = msg.get(name)
        oneofs += "oneof" in opts and v is not None
        if "ver" in opts and v != 1:
            raise HushError("Decode", f"{t}: unsupported version {v}")
        if "req" in opts and v is None:
            raise HushError("Decode", f"{t}.{name} missing")
        if "role" in opts and (v or 0) > 1:
            raise HushError("Decode", f"{t}: unknown role {v}")
        if kind == "bytes" and (v is not None or "oneof" not in opts):
            v = v or b""
            if opts.isdigit() and len(v) != int(opts):
                raise HushError("Decode", f"{t}.{name} is {len(v)} bytes, not {opts}")
            if "ik" in opts:
                check_identity_key(v)
            if opts == "kempk" and not kem_key_valid(v):
                raise HushError("Decode", f"{t}.{name} is not an ML-KEM-768 public key")
            if opts == "kemct" and len(v) not in (0, KEM_CT_LEN):
                raise HushError("Decode", f"{t}.{name} is {len(v)} bytes, not {KEM_CT_LEN}")
            if opts == "ct" and len(v) < 16:
                raise HushError("Decode", f"{t}.{name} shorter than a tag")
            if opts in S:
                decode(opts, v)
        if kind not in ("u32", "u64", "bytes") and v is not None:
            for sub in (v if "rep" in opts else [v]):
                validate(kind, sub)
    if t == "PrekeyMessage" and ("kem_prekey_id" in msg) != bool(msg.get("kem_ciphertext")):
        raise HushError("Decode", "PrekeyMessage: kem_prekey_id and kem_ciphertext go together")  # §9.4
    if t == "PqHeader":  # §7.8.2
        epoch, mixed, chunk = msg.get("epoch", 0), msg.get("mixed", 0), msg.get("chunk", b"")
        if epoch == 0 or mixed >= epoch:
            raise HushError("Decode", "PqHeader: epoch 0, or mixed not below epoch")
        if len(chunk) not in (0, PQ_CHUNK_LEN) or msg.get("chunk_index", 0) > 255:
            raise HushError("Decode", "PqHeader: chunk length or index out of range")
        if not chunk and msg.get("chunk_index", 0):
            raise HushError("Decode", "PqHeader: an index without a chunk")
    if any("oneof" in str(f[3]) for f in S[t]) and oneofs != 1:
        raise HushError("Decode", f"{t}: needs exactly one of its oneof fields, has {oneofs}")

def decode(t, data):
    """Strict decoder: parse, then require the input to be THE canonical encoding."""
    if len(data) > MAX_LEN.get(t, MAX_GROUP_WIRE):
        raise HushError("Decode", "too long")
    msg = parse(t, data)
    if encode(t, msg) != data:
        raise HushError("Decode", f"{t}: not the canonical encoding")
    validate(t, msg)
    return msg


# ---------------------------------------------------------------- verifier bookkeeping
class Checker:
    def __init__(self):
        self.passed = self.failed = 0

    def eq(self, what, want, got):
        if want == got:
            self.passed += 1
        else:
            self.failed += 1
            fmt = lambda x: x.hex() if isinstance(x, bytes) else repr(x)
            print(f"  FAIL {what}: expected {fmt(want)}, got {fmt(got)}")

    def fail(self, what, why):
        self.failed += 1
        print(f"  FAIL {what}: {why}")

    def refuses(self, what, want_cls, fn, state_fn=None):
        """fn() must raise HushError(want_cls) and leave state_fn() unchanged."""
        before = copy.deepcopy(state_fn()) if state_fn else None
        try:
            fn()
            self.fail(what, f"accepted, expected {want_cls}")
        except HushError as e:
            self.eq(what + " error", want_cls, e.cls)
        if state_fn:
            self.eq(what + " state unchanged", True, state_fn() == before)

def h(x):
    return None if x is None else bytes.fromhex(x)

def from_json(t, obj):
    """Convert a wire.json `fields` object into the dict form used by encode()."""
    out = {}
    for num, name, kind, opts in S[t]:
        if name not in obj:
            continue
        v = obj[name]
        conv = (lambda x: x) if kind in ("u32", "u64") else h if kind == "bytes" else (lambda x, k=kind: from_json(k, x))
        out[name] = [conv(x) for x in v] if "rep" in str(opts) else conv(v)
    unknown = set(obj) - {f[1] for f in S[t]}
    if unknown:
        raise ValueError(f"{t}: unknown field names in vector: {sorted(unknown)}")
    return out

def normal(t, msg):
    """Fill the implicit defaults of plain fields, so that {"role": 0} equals {}."""
    out = {}
    for num, name, kind, opts in S[t]:
        v, opts = msg.get(name), str(opts)
        if v is None and not any(o in opts for o in ("opt", "oneof")) and kind not in S:
            v = [] if "rep" in opts else b"" if kind == "bytes" else 0
        if kind in S and v is not None:
            v = [normal(kind, x) for x in v] if "rep" in opts else normal(kind, v)
        if v is not None:
            out[name] = v
    return out


# ---------------------------------------------------------------- simple files
def check_identity(c, v):
    for i, e in enumerate(v["identities"]):
        seed = h(e["seed"])
        pub = ed_public(seed)
        c.eq(f"identities[{i}].ed25519_public", h(e["ed25519_public"]), pub)
        c.eq(f"identities[{i}].x25519_public", h(e["x25519_public"]), ed_to_x25519_public(pub))
        c.eq(f"identities[{i}].x25519_private", h(e["x25519_private"]), ed_to_x25519_private(seed))
        # the map must agree with X25519 applied to the derived private scalar
        c.eq(f"identities[{i}] map consistency", ed_to_x25519_public(pub), x_public(ed_to_x25519_private(seed)))
    for i, e in enumerate(v["safety_numbers"]):
        args = [h(e[k]) for k in ("id_a", "key_a", "id_b", "key_b")]
        digits, scan = safety_number(*args)
        c.eq(f"safety_numbers[{i}].digits", e["digits"], digits)
        c.eq(f"safety_numbers[{i}].scannable", h(e["scannable"]), scan)
        c.eq(f"safety_numbers[{i}] symmetric", (digits, scan), safety_number(*args[2:], *args[:2]))
    for i, e in enumerate(v["invalid_identity_keys"]):
        c.refuses(f"invalid_identity_keys[{i}] ({e.get('reason')})", e["error"], lambda: check_identity_key(h(e["key"])))

def check_kdf(c, v):
    for i, e in enumerate(v["root_kdf"]):
        c.eq(f"root_kdf[{i}]", (h(e["rk_out"]), h(e["ck_out"])), kdf_rk(h(e["rk"]), h(e["dh"])))
    for i, e in enumerate(v["chain_kdf"]):
        c.eq(f"chain_kdf[{i}]", (h(e["ck_out"]), h(e["mk"])), kdf_ck(h(e["ck"])))
    for i, e in enumerate(v["message_keys"]):
        c.eq(f"message_keys[{i}]", (h(e["key"]), h(e["nonce"])), message_keys(h(e["mk"]), e["info"].encode()))

def check_seal(c, v):
    for i, e in enumerate(v["cases"]):
        key, label = h(e["storage_key"]), e["label"].encode()
        blob = seal(key, label, h(e["salt"]), h(e["plaintext"]))
        c.eq(f"seal.cases[{i}].blob", h(e["blob"]), blob)
        c.eq(f"seal.cases[{i}] opens", h(e["plaintext"]), unseal(key, label, h(e["blob"])))
    for i, e in enumerate(v["invalid"]):
        c.refuses(f"seal.invalid[{i}]", e["error"], lambda: unseal(h(e["storage_key"]), e["label"].encode(), h(e["blob"])))

def check_wire(c, v):
    for i, e in enumerate(v["valid"]):
        t, want = e["type"], h(e["bytes"])
        fields = from_json(t, e["fields"])
        c.eq(f"wire.valid[{i}] {t} encode", want, encode(t, fields))
        try:
            c.eq(f"wire.valid[{i}] {t} decode", normal(t, fields), normal(t, decode(t, want)))
        except HushError as err:
            c.fail(f"wire.valid[{i}] {t} decode", f"refused: {err}")
    for i, e in enumerate(v["invalid"]):
        c.refuses(f"wire.invalid[{i}] {e['type']} ({e.get('reason')})", e["error"], lambda: decode(e["type"], h(e["bytes"])))


# ---------------------------------------------------------------- §5, §6 X3DH
def make_bundle(ik_seed, spk_id, spk_priv, opk_id, opk_priv):
    spk = x_public(spk_priv)
    signed = b"hush signed prekey v1" + u32be(spk_id) + spk
    sig = sign(ik_seed, signed)
    bundle = {"version": 1, "identity_key": ed_public(ik_seed), "signed_prekey_id": spk_id,
              "signed_prekey": spk, "signed_prekey_signature": sig}
    if opk_priv is not None:
        bundle["one_time_prekey"] = {"id": opk_id, "key": x_public(opk_priv)}
    return signed, sig, encode("PrekeyBundle", bundle)

SPK_LABEL, PQ_SPK_LABEL = b"hush signed prekey v1", b"hush signed prekey PQXDH v1"
KEM_PREKEY_LABEL = b"hush KEM prekey ML-KEM-768 v1"

def open_bundle(data, policy="post_quantum_when_offered"):
    """§5.2: decode and verify a bundle before use, under the initiator's policy (§6.3)."""
    b = decode("PrekeyBundle", data)
    ik = b["identity_key"]
    signed_for = lambda label: verify(ik, label + u32be(b.get("signed_prekey_id", 0)) + b["signed_prekey"],
                                      b["signed_prekey_signature"])
    kem = b.get("kem_prekey")
    if kem is not None:
        if not signed_for(PQ_SPK_LABEL):
            raise HushError("InvalidSignature", "signed prekey not signed for PQXDH")
        if not verify(ik, KEM_PREKEY_LABEL + u32be(kem.get("id", 0)) + kem["key"], kem["signature"]):
            raise HushError("InvalidKemPrekeySignature")
        return b
    if not signed_for(SPK_LABEL):
        raise HushError("KemPrekeyRemoved" if signed_for(PQ_SPK_LABEL) else "InvalidSignature")
    if policy == "post_quantum_only":
        raise HushError("ClassicalRefused")
    return b

def x3dh_initiator(ik_a_seed, bundle, ek_priv):
    """Returns (dh list, SK, AD) from Alice's side."""
    ik_b = bundle["identity_key"]
    spk = bundle["signed_prekey"]
    dhs = [dh(ed_to_x25519_private(ik_a_seed), spk), dh(ek_priv, ed_to_x25519_public(ik_b)), dh(ek_priv, spk)]
    if "one_time_prekey" in bundle:
        dhs.append(dh(ek_priv, bundle["one_time_prekey"]["key"]))
    return dhs, x3dh_sk(dhs), ed_public(ik_a_seed) + ik_b

def x3dh_responder(ik_b_seed, spk_priv, opk_priv, ik_a, ek):
    """Bob's side of §6: the same DH values from the other private halves."""
    return [dh(spk_priv, ed_to_x25519_public(ik_a)), dh(ed_to_x25519_private(ik_b_seed), ek),
            dh(spk_priv, ek)] + ([dh(opk_priv, ek)] if opk_priv is not None else [])

def x3dh_sk(dhs):
    return hkdf(bytes(32), b"\xff" * 32 + b"".join(dhs), b"hush X3DH v1", 32)

def pqxdh_sk(dhs, ss):
    """§6.2: the X3DH input with the KEM secret appended, under the PQXDH label."""
    return hkdf(bytes(32), b"\xff" * 32 + b"".join(dhs) + ss, b"hush PQXDH X25519 ML-KEM-768 v1", 32)

def check_x3dh(c, v):
    for i, e in enumerate(v["cases"]):
        w = f"x3dh.cases[{i}]"
        opk_priv = h(e["opk_private"])
        signed, sig, bundle = make_bundle(h(e["ik_b_seed"]), e["spk_id"], h(e["spk_private"]), e["opk_id"], opk_priv)
        c.eq(w + ".ik_a", h(e["ik_a"]), ed_public(h(e["ik_a_seed"])))
        c.eq(w + ".ik_b", h(e["ik_b"]), ed_public(h(e["ik_b_seed"])))
        c.eq(w + ".spk", h(e["spk"]), x_public(h(e["spk_private"])))
        c.eq(w + ".opk", h(e["opk"]), opk_priv and x_public(opk_priv))
        c.eq(w + ".ek", h(e["ek"]), x_public(h(e["ek_private"])))
        c.eq(w + ".spk_signed_message", h(e["spk_signed_message"]), signed)
        c.eq(w + ".spk_signature", h(e["spk_signature"]), sig)
        c.eq(w + ".bundle", h(e["bundle"]), bundle)
        dhs, sk, ad = x3dh_initiator(h(e["ik_a_seed"]), open_bundle(h(e["bundle"])), h(e["ek_private"]))
        c.eq(w + ".dh1..dh4", [h(e[k]) for k in ("dh1", "dh2", "dh3", "dh4")], dhs + [None] * (4 - len(dhs)))
        c.eq(w + ".sk", h(e["sk"]), sk)
        c.eq(w + ".ad", h(e["ad"]), ad)
        bob = x3dh_responder(h(e["ik_b_seed"]), h(e["spk_private"]), opk_priv,
                             ed_public(h(e["ik_a_seed"])), x_public(h(e["ek_private"])))
        c.eq(w + " responder agrees", dhs, bob)


# ---------------------------------------------------------------- §5, §6.2 PQXDH
def pq_bob_keys(e):
    ek, dk = kem_keys(h(e["kem_seed"]))
    return dict(spk_id=e["spk_id"], spk=h(e["spk_private"]), opk_id=e["opk_id"], opk=h(e["opk_private"]),
                spk_post_quantum=True, kem_id=e["kem_id"], kem_ek=ek, kem_dk=dk,
                kem_last_resort=e["kem_last_resort"], kem_deleted=False, kem_used=set())

def pq_accept(e, keys, wire):
    """A responder that forgets each session after accepting it (so a repeat is a new
    session), deleting a one-time KEM prekey and recording a last-resort use (§6.2)."""
    bob = Party("bob", h(e["ik_b_seed"]), [bytes([i]) * 32 for i in range(1, 4)])
    pt, _ = receive(bob, keys, wire)
    pk = decode("SessionMessage", wire)["prekey"]
    if keys["kem_last_resort"]:
        keys["kem_used"].add((pk["kem_prekey_id"], pk.get("signed_prekey_id", 0), pk["base_key"]))
    else:
        keys["kem_deleted"] = True
    return pt

def check_pqxdh(c, v):
    for i, e in enumerate(v["cases"]):
        w = f"pqxdh.cases[{i}]"
        ik_b, keys = h(e["ik_b_seed"]), pq_bob_keys(e)
        spk = x_public(keys["spk"])
        signed = PQ_SPK_LABEL + u32be(e["spk_id"]) + spk
        kem_signed = KEM_PREKEY_LABEL + u32be(e["kem_id"]) + keys["kem_ek"]
        bundle = {"version": 1, "identity_key": ed_public(ik_b), "signed_prekey_id": e["spk_id"],
                  "signed_prekey": spk, "signed_prekey_signature": sign(ik_b, signed),
                  "kem_prekey": {"id": e["kem_id"], "key": keys["kem_ek"], "signature": sign(ik_b, kem_signed)}}
        if keys["opk"] is not None:
            bundle["one_time_prekey"] = {"id": e["opk_id"], "key": x_public(keys["opk"])}
        c.eq(w + ".ik_a", h(e["ik_a"]), ed_public(h(e["ik_a_seed"])))
        c.eq(w + ".ik_b", h(e["ik_b"]), ed_public(ik_b))
        c.eq(w + ".spk", h(e["spk"]), spk)
        c.eq(w + ".opk", h(e["opk"]), keys["opk"] and x_public(keys["opk"]))
        c.eq(w + ".ek", h(e["ek"]), x_public(h(e["ek_private"])))
        c.eq(w + ".spk_signed_message", h(e["spk_signed_message"]), signed)
        c.eq(w + ".spk_signature", h(e["spk_signature"]), bundle["signed_prekey_signature"])
        c.eq(w + ".kem_public", h(e["kem_public"]), keys["kem_ek"])
        c.eq(w + ".kem_signed_message", h(e["kem_signed_message"]), kem_signed)
        c.eq(w + ".kem_signature", h(e["kem_signature"]), bundle["kem_prekey"]["signature"])
        c.eq(w + ".bundle", h(e["bundle"]), encode("PrekeyBundle", bundle))
        # Alice: her recorded randomness is EK_A, m, DHs_A (§6.2).
        alice = Party("alice", h(e["ik_a_seed"]), [h(e["ek_private"]), h(e["kem_m"]), h(e["dhs_a_private"]),
                                                   h(e["pq_seed"])])
        x = alice_start(alice, h(e["bundle"]))
        dhs = x["dhs_list"]
        c.eq(w + ".dh1..dh4", [h(e[k]) for k in ("dh1", "dh2", "dh3", "dh4")], dhs + [None] * (4 - len(dhs)))
        for k in ("kem_ciphertext", "ss", "sk", "ad"):
            c.eq(f"{w}.{k}", h(e[k]), x[k])
        c.eq(w + ".pq_public", h(e["pq_public"]), kem_keys(h(e["pq_seed"]))[0])
        c.eq(w + ".wire", h(e["wire"]), ratchet_send(alice, h(e["plaintext"]))["wire"])
        try:
            c.eq(w + " responder opens it", h(e["plaintext"]), pq_accept(e, keys, h(e["wire"])))
        except HushError as err:
            c.fail(w + " responder opens it", f"refused: {err}")
    for i, nb in enumerate(v["bundle_negative"]):
        c.refuses(f"pqxdh.bundle_negative[{i}] ({nb['note']})", nb["error"],
                  lambda: open_bundle(h(nb["bundle"]), nb["policy"]))
    for i, rn in enumerate(v["responder_negative"]):
        e = v["cases"][rn["case"]]
        keys = pq_bob_keys(e)
        for j in rn["accepted"]:
            pq_accept(v["cases"][j], keys, h(v["cases"][j]["wire"]))
        c.refuses(f"pqxdh.responder_negative[{i}] ({rn['note']})", rn["error"],
                  lambda: pq_accept(e, keys, h(rn["wire"])), lambda: (keys["kem_deleted"], sorted(keys["kem_used"])))


# ---------------------------------------------------------------- §7.8 post-quantum ratchet
# §7.8.3: systematic Reed-Solomon over GF(2^8) mod x^8+x^4+x^3+x^2+1 (0x11d), evaluation form.
GF_EXP, GF_LOG = [0] * 512, [0] * 256
_x = 1
for _i in range(255):
    GF_EXP[_i] = GF_EXP[_i + 255] = _x
    GF_LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D

def gf_mul(a, b):
    return 0 if a == 0 or b == 0 else GF_EXP[GF_LOG[a] + GF_LOG[b]]

def gf_div(a, b):
    return 0 if a == 0 else GF_EXP[(GF_LOG[a] - GF_LOG[b]) % 255]

def lagrange(points, x):
    """The coefficients L_i(x) of the polynomial through `points` (GF(2^8): minus is xor)."""
    out = []
    for i, xi in enumerate(points):
        num = den = 1
        for j, xj in enumerate(points):
            if j != i:
                num, den = gf_mul(num, x ^ xj), gf_mul(den, xi ^ xj)
        out.append(gf_div(num, den))
    return out

def rs_chunk(payload, x):
    """Chunk x of a payload cut into k = ceil(len / 104) zero-padded data chunks."""
    k = -(-len(payload) // PQ_CHUNK_LEN)
    padded = payload + bytes(k * PQ_CHUNK_LEN - len(payload))
    data = [padded[j * PQ_CHUNK_LEN:(j + 1) * PQ_CHUNK_LEN] for j in range(k)]
    if x < k:
        return data[x]
    coef = lagrange(list(range(k)), x)
    return bytes(_xor_all(gf_mul(coef[j], data[j][p]) for j in range(k)) for p in range(PQ_CHUNK_LEN))

def _xor_all(values):
    out = 0
    for v in values:
        out ^= v
    return out

def rs_decode(chunks):
    """The padded payload from k chunks {index: bytes} with distinct indices."""
    points = sorted(chunks)
    out = b""
    for t in range(len(points)):
        if t in chunks:
            out += chunks[t]
            continue
        coef = lagrange(points, t)
        out += bytes(_xor_all(gf_mul(coef[i], chunks[xi][p]) for i, xi in enumerate(points))
                     for p in range(PQ_CHUNK_LEN))
    return out

PQ_KEY_CHUNKS, PQ_CT_CHUNKS = -(-KEM_PK_LEN // PQ_CHUNK_LEN), -(-KEM_CT_LEN // PQ_CHUNK_LEN)

def pq_new(initiator, seed=None):
    """§7.8.5: epoch 1; the initiator sends the key (from `seed`), the responder awaits it."""
    pq = dict(initiator=initiator, epoch=1, mixable=0, next=0, chunks={}, secrets=[])
    if initiator:
        pq.update(phase="key", ek=kem_keys(seed)[0], dk=kem_keys(seed)[1])
    else:
        pq.update(phase="await")
    return pq

def pq_outgoing(pq, mixed):
    hdr = {"epoch": pq["epoch"], "mixed": mixed}
    # §7.8.2: the key's sender stops once a ciphertext chunk shows the peer has the key.
    payload = {"key": None if pq["chunks"] else pq.get("ek"), "ct": pq.get("ct"), "await": None}[pq["phase"]]
    if payload is not None:
        hdr.update(chunk_index=pq["next"], chunk=rs_chunk(payload, pq["next"]))
        pq["next"] = (pq["next"] + 1) % 256
    return hdr

def pq_secret(pq, epoch):
    return next((ss for e, ss in pq["secrets"] if e == epoch), None)

def pq_keep(pq, ss):
    pq["secrets"] = (pq["secrets"] + [(pq["epoch"], ss)])[-2:]

def pq_assemble(pq, hdr, k, length):
    """Adds the header's chunk; returns the payload once k distinct chunks are held."""
    if "chunk" not in hdr or hdr.get("chunk_index", 0) in pq["chunks"]:
        return None
    pq["chunks"][hdr.get("chunk_index", 0)] = hdr["chunk"]
    if len(pq["chunks"]) < k:
        return None
    payload = rs_decode(pq["chunks"])
    if any(payload[length:]):
        raise HushError("PostQuantum", "InvalidPayload")
    return payload[:length]

def pq_receive(p, pq, hdr):
    """§7.8.5 on the (already copied) state, for an authentic header."""
    ours, theirs = pq["epoch"], hdr["epoch"]
    if theirs < ours:
        return
    if pq["phase"] in ("key", "await") and theirs > ours:
        raise HushError("PostQuantum", "EpochAhead")
    if pq["phase"] == "key":
        ct = pq_assemble(pq, hdr, PQ_CT_CHUNKS, KEM_CT_LEN)
        if ct is not None:
            if ours == 2**32 - 1:
                raise HushError("PostQuantum", "EpochsExhausted")
            pq_keep(pq, kem_decaps(pq["dk"], ct))
            pq.update(mixable=ours, epoch=ours + 1, phase="await", chunks={}, next=0)
            pq.pop("ek"), pq.pop("dk")
    elif pq["phase"] == "await":
        ek = pq_assemble(pq, hdr, PQ_KEY_CHUNKS, KEM_PK_LEN)
        if ek is not None:
            if not kem_key_valid(ek):
                raise HushError("PostQuantum", "InvalidPayload")
            ct, ss = kem_encaps(ek, p.draw("kem", 32))
            pq_keep(pq, ss)
            pq.update(phase="ct", ct=ct, chunks={}, next=0)
    else:
        if theirs == ours:
            return
        if theirs != ours + 1:
            raise HushError("PostQuantum", "EpochAhead")
        if "chunk" in hdr:
            raise HushError("PostQuantum", "UnexpectedChunk")
        ek, dk = kem_keys(p.draw("kem", 64))
        pq.pop("ct")
        pq.update(mixable=ours, epoch=ours + 1, phase="key", ek=ek, dk=dk, next=0)

def kdf_rk_pq(rk, dh_out, ss):
    """§7.8.4: the root KDF, with the named epoch's secret after the DH output."""
    if ss is None:
        return kdf_rk(rk, dh_out)
    okm = hkdf(rk, dh_out + ss, b"hush root PQ ratchet ML-KEM-768 v1", 64)
    return okm[:32], okm[32:]


# ---------------------------------------------------------------- §7 Double Ratchet
MAX_MESSAGE_GAP, MAX_SKIPPED_KEYS, MAX_RECEIVER_CHAINS, MAX_PLAINTEXT_LEN = 1000, 2000, 5, 262144

class Party:
    """One side of a session.  `rand` is the recorded RNG output, consumed in order."""

    def __init__(self, name, seed, rand):
        self.name, self.seed, self.rand, self.ri = name, seed, rand, 0
        self.s = None                              # session state (a plain dict), None before X3DH

    def draw(self, kind="x25519", length=32):
        """The next recorded value (`kind` and `length` matter only to the adversary below)."""
        self.ri += 1
        return self.rand[self.ri - 1]

    def state(self):
        return (self.s, self.ri)

def alice_start(alice, bundle_bytes):
    b = open_bundle(bundle_bytes)
    ek = alice.draw()
    dhs_list, sk, ad = x3dh_initiator(alice.seed, b, ek)
    kem, out = b.get("kem_prekey"), {}
    if kem is not None:                            # §6.2: EK_A, then m, then DHs
        ct, ss = kem_encaps(kem["key"], alice.draw())
        sk = pqxdh_sk(dhs_list, ss)
        kem = (kem.get("id", 0), ct)
        out.update(kem_ciphertext=ct, ss=ss, dhs_list=dhs_list)
    dhs = alice.draw()
    dh0 = dh(dhs, b["signed_prekey"])
    rk, cks = kdf_rk(sk, dh0)
    opk = b.get("one_time_prekey")
    alice.s = dict(ad=ad, rk=rk, dhs=dhs, cks=cks, ns=0, pn=0, chains=[], skipped=[], pending=True, role="initiator",
                   params=(ed_public(alice.seed), x_public(ek), b.get("signed_prekey_id", 0), opk and opk.get("id", 0), kem),
                   pq=None, pq_mixed=0)
    if kem is not None:                            # §7.8.1: PQXDH sessions run the PQ ratchet
        alice.s["pq"] = pq_new(True, alice.draw())
    out.update(sk=sk, ad=ad, dh=dh0, root_key=rk, sending_chain_key=cks)
    return out

def ratchet_send(p, plaintext):
    s = p.s
    if len(plaintext) > MAX_PLAINTEXT_LEN:
        raise HushError("TooLarge")
    if s["ns"] >= 2**32 - 1:
        raise HushError("ChainExhausted")
    s.pop("pending_rk", None)                     # the step's sending half is done by now
    out = dict(chain_key=s["cks"], ratchet_key=x_public(s["dhs"]), pn=s["pn"], n=s["ns"])
    s["cks"], mk = kdf_ck(s["cks"])
    hdr = {"version": 1, "ratchet_key": out["ratchet_key"], "previous_chain_length": s["pn"], "message_number": s["ns"]}
    if s.get("pq") is not None:                    # §7.8.2
        hdr["pq"] = pq_outgoing(s["pq"], s["pq_mixed"])
    out["header"] = encode("Header", hdr)
    key, nonce = message_keys(mk)
    out.update(message_key=mk, aead_key=key, aead_nonce=nonce, ad=s["ad"] + out["header"])
    out["ciphertext"] = aead_seal(key, nonce, out["ad"], plaintext)
    s["ns"] += 1
    rm = {"header": out["header"], "ciphertext": out["ciphertext"]}
    if s["pending"]:                               # §6: a PrekeyMessage until Alice has received
        ik, base, spk_id, opk_id, kem = s["params"]
        pk = {"version": 1, "identity_key": ik, "base_key": base, "signed_prekey_id": spk_id,
              "one_time_prekey_id": opk_id, "message": rm}
        if kem is not None:                        # §9.4 fields 7 and 8
            pk.update(kem_prekey_id=kem[0], kem_ciphertext=kem[1])
        out["wire"] = encode("SessionMessage", {"prekey": pk})
    else:
        out["wire"] = encode("SessionMessage", {"ratchet": rm})
    return out

def skip_to(st, chain, until):
    """Derive and store the keys of messages chain.nr .. until-1 as skipped (§7.4 step 4)."""
    count = 0
    while chain[2] < until:
        chain[1], mk = kdf_ck(chain[1])
        st["skipped"].append((chain[0], chain[2], mk))
        chain[2] += 1
        count += 1
    del st["skipped"][:max(0, len(st["skipped"]) - MAX_SKIPPED_KEYS)]   # evict oldest first
    return count

def take_skipped(st, dhr, n):
    for i, (k, m, mk) in enumerate(st["skipped"]):
        if k == dhr and m == n:
            del st["skipped"][i]
            return mk
    return None

def ratchet_receive(p, s, rm):
    """§7.4 on a copy of s; returns (new state, plaintext, ratchet-step info or None)."""
    st = copy.deepcopy(s)
    hdr = decode("Header", rm["header"])
    dhr, pn, n = hdr["ratchet_key"], hdr.get("previous_chain_length", 0), hdr.get("message_number", 0)
    if (st.get("pq") is None) != ("pq" not in hdr):                   # §7.8.1: no downgrade
        raise HushError("PostQuantum", "Missing")
    ad = st["ad"] + rm["header"]                                      # header bytes as received (§8)
    decrypt = lambda mk: aead_open(*message_keys(mk), ad, rm["ciphertext"])
    chain = next((ch for ch in st["chains"] if ch[0] == dhr), None)
    info = None
    if chain is not None:                                             # step 1: known chain
        if n < chain[2]:
            mk = take_skipped(st, dhr, n)
            if mk is None:
                raise HushError("Duplicate")
        else:
            if n - chain[2] > MAX_MESSAGE_GAP:
                raise HushError("TooFarAhead", f"gap {n - chain[2]}")
            skip_to(st, chain, n)
            chain[1], mk = kdf_ck(chain[1])
            chain[2] = n + 1
        pt = decrypt(mk)
        if st.get("pq") is not None:
            pq_receive(p, st["pq"], hdr["pq"])
    elif any(k == dhr and m == n for k, m, _ in st["skipped"]):       # step 2: dropped chain
        pt = decrypt(take_skipped(st, dhr, n))
        if st.get("pq") is not None:
            pq_receive(p, st["pq"], hdr["pq"])
    else:                                                             # step 3: DH ratchet step
        info = dict(previous_chain_skipped=0, root_key_before=st["rk"])
        if st["chains"]:
            cur = st["chains"][-1]
            if pn - cur[2] > MAX_MESSAGE_GAP:
                raise HushError("TooFarAhead", "previous chain")
            info["previous_chain_skipped"] = skip_to(st, cur, pn)
        mixed = hdr.get("pq", {}).get("mixed", 0)
        their_ss = pq_secret(st["pq"], mixed) if mixed else None
        if mixed and their_ss is None:                                # §7.8.4: cannot authenticate
            raise HushError("Authentication", "epoch secret not held")
        info["dh_receiving"] = dh(st["dhs"], dhr, cls="InvalidRatchetKey")
        rk1, ckr = kdf_rk_pq(st["rk"], info["dh_receiving"], their_ss)
        info.update(root_key_mid=rk1, receiving_chain_key=ckr)
        if n > MAX_MESSAGE_GAP:
            raise HushError("TooFarAhead", f"gap {n}")
        new = [dhr, ckr, 0]
        skip_to(st, new, n)
        new[1], mk = kdf_ck(new[1])
        new[2] = n + 1
        pt = decrypt(mk)
        dhs_new = p.draw()                                            # only after success
        if st.get("pq") is not None:                                  # §7.8.5, then mix §7.8.4
            pq_receive(p, st["pq"], hdr["pq"])
        mixed = st["pq"]["mixable"] if st.get("pq") is not None else 0
        info.update(new_ratchet_key=x_public(dhs_new), dh_sending=dh(dhs_new, dhr, cls="InvalidRatchetKey"))
        rk2, cks = kdf_rk_pq(rk1, info["dh_sending"], pq_secret(st["pq"], mixed) if mixed else None)
        info.update(root_key_after=rk2, sending_chain_key=cks)
        st.update(pn=st["ns"], ns=0, dhs=dhs_new, rk=rk2, cks=cks, pq_mixed=mixed)
        st["pending_rk"] = rk1      # §11.2: until the next send, a state stores RK1 (field 13 set)
        st["chains"] = (st["chains"] + [new])[-MAX_RECEIVER_CHAINS:]
    st["pending"] = False                                             # step 5
    return st, pt, info

def receive(p, bob_keys, wire):
    """Full receive of a SessionMessage, committing only on success."""
    msg = decode("SessionMessage", wire)
    ri = p.ri
    try:
        if "prekey" in msg:
            pk = msg["prekey"]
            kem = (pk["kem_prekey_id"], pk["kem_ciphertext"]) if "kem_prekey_id" in pk else None
            params = (pk["identity_key"], pk["base_key"], pk.get("signed_prekey_id", 0), pk.get("one_time_prekey_id"), kem)
            if p.s is not None:
                # §7.4: only the responder's session takes a repeat of its own prekey message.
                if p.s["role"] != "responder" or p.s["params"] != params:
                    raise HushError("WrongSession")
                s = p.s
            else:                                  # Bob, §7.2: X3DH as responder, RK = SK, DHs = SPK_B
                if bob_keys is None or params[2] != bob_keys["spk_id"] or (params[3] is not None and params[3] != bob_keys["opk_id"]):
                    raise HushError("UnknownPrekey")   # not named by SPEC §7.6
                opk = bob_keys["opk"] if params[3] is not None else None
                # §6.2, in its order: the suite, the KEM prekey, a last-resort repeat; then DH.
                if kem is None and bob_keys.get("spk_post_quantum"):
                    raise HushError("ClassicalRefused")
                if kem is not None:
                    if kem[0] != bob_keys.get("kem_id") or bob_keys.get("kem_deleted"):
                        raise HushError("MissingKemPrekey")
                    if bob_keys["kem_last_resort"] and (kem[0], params[2], pk["base_key"]) in bob_keys["kem_used"]:
                        raise HushError("KemPrekeyReused")
                dhs = x3dh_responder(p.seed, bob_keys["spk"], opk, pk["identity_key"], pk["base_key"])
                sk = x3dh_sk(dhs) if kem is None else pqxdh_sk(dhs, kem_decaps(bob_keys["kem_dk"], kem[1]))
                s = dict(ad=pk["identity_key"] + ed_public(p.seed), rk=sk, dhs=bob_keys["spk"], cks=None, ns=0, pn=0,
                         chains=[], skipped=[], pending=False, params=params, role="responder", pq_mixed=0,
                         pq=pq_new(False) if "pq" in decode("Header", pk["message"]["header"]) else None)
            rm = pk["message"]
        else:
            if p.s is None:
                raise HushError("Authentication", "no session")
            s, rm = p.s, msg["ratchet"]
        st, pt, info = ratchet_receive(p, s, rm)
    except HushError:
        p.ri = ri                                   # nothing drawn on failure
        raise
    p.s = st
    return pt, info

def check_session(c, v):
    for ti, t in enumerate(v["transcripts"]):
        w = f"transcripts[{ti}]"
        a, b = t["alice"], t["bob"]
        alice = Party("alice", h(a["identity_seed"]), [h(x) for x in t["alice_random"]])
        bob = Party("bob", h(b["identity_seed"]), [h(x) for x in t["bob_random"]])
        bob_keys = dict(spk_id=b["spk_id"], spk=h(b["spk_private"]), opk_id=b["opk_id"], opk=h(b["opk_private"]))
        _, _, bundle = make_bundle(bob.seed, b["spk_id"], bob_keys["spk"], b["opk_id"], bob_keys["opk"])
        c.eq(w + ".bundle", h(t["bundle"]), bundle)
        x = alice_start(alice, h(t["bundle"]))
        for k in ("sk", "ad", "dh", "root_key", "sending_chain_key"):
            c.eq(f"{w}.x3dh.{k}", h(t["x3dh"][k]), x[k])
        parties, sends = {"alice": alice, "bob": bob}, {}
        for ei, e in enumerate(t["events"]):
            we = f"{w}.events[{ei}] {e['type']}"
            try:
                if e["type"] == "send":
                    p = parties[e["from"]]
                    out = ratchet_send(p, h(e["plaintext"]))
                    c.eq(we + ".index", len(sends), e["index"])
                    sends[e["index"]] = e
                    for k in ("ratchet_key", "chain_key", "message_key", "aead_key", "aead_nonce", "header", "ad", "ciphertext", "wire"):
                        c.eq(f"{we}.{k}", h(e[k]), out[k])
                    c.eq(we + ".pn/n", (e["pn"], e["n"]), (out["pn"], out["n"]))
                elif e["type"] == "receive":
                    p = parties[e["to"]]
                    pt, info = receive(p, bob_keys if p is bob else None, h(sends[e["message"]]["wire"]))
                    c.eq(we + ".plaintext", h(e["plaintext"]), pt)
                    want = e["ratchet_step"]
                    if want is None or info is None:
                        c.eq(we + ".ratchet_step", want is None, info is None)
                    else:
                        for k, val in want.items():
                            c.eq(f"{we}.ratchet_step.{k}", val if isinstance(val, int) else h(val), info.get(k))
                    c.eq(we + ".skipped_keys_after", e["skipped_keys_after"], len(p.s["skipped"]))
                elif e["type"] == "reject":
                    p = parties[e["to"]]
                    c.refuses(f"{we} ({e.get('note')})", e["error"],
                              lambda: receive(p, bob_keys if p is bob else None, h(e["wire"])), p.state)
                elif e["type"] == "restore":
                    p = parties[e["party"]]
                    key, salt = h(t["storage_key"]), h(e["salt"])
                    pt = unseal(key, b"session", h(e["sealed_state"]))
                    c.eq(we + " reseal", h(e["sealed_state"]), seal(key, b"session", salt, pt))
                    c.eq(we + ".root_key", p.s.get("pending_rk", p.s["rk"]), proto_field(pt, 4))
                    c.eq(we + ".pending_step present", "pending_rk" in p.s, proto_field(pt, 13) is not None)
                else:
                    c.fail(we, "unknown event type")
            except HushError as err:
                c.fail(we, f"unexpected refusal {err}")
        c.eq(w + " all recorded random values used", (len(alice.rand), len(bob.rand)), (alice.ri, bob.ri))
    for i, nb in enumerate(v["bundle_negative"]):
        c.refuses(f"bundle_negative[{i}] ({nb.get('note', '')})", nb["error"], lambda: open_bundle(h(nb["bundle"])))

def proto_field(data, want):
    """Non-canonical-tolerant lookup of a length-delimited field (for SessionState, §11.2)."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        if key & 7 == 0:
            _, pos = read_varint(data, pos)
        elif key & 7 == 2:
            n, pos = read_varint(data, pos)
            if key >> 3 == want:
                return data[pos:pos + n]
            pos += n
        else:
            raise HushError("Decode", "unexpected wire type in state")
    return None


# ---------------------------------------------------------------- §13 groups
MAX_OLD_CHAINS, MAX_GROUP_SKIPPED, MAX_MEMBERS = 4, 2000, 256

class GMember:
    def __init__(self, name, seed):
        self.name, self.seed, self.ik = name, seed, ed_public(seed)
        self.g = None        # group state; None until create / group info
        self.mine = None     # own sending chain: dict(id, it, ck, seed)
        self.old_ids = []    # chain ids this member used before
        self.drawn = b""     # what this member drew from its RNG, to compare with `random`

    def state(self):
        return (self.g, self.mine)

def new_group_state(gid, epoch, head, members, applied):
    return dict(gid=gid, epoch=epoch, head=head, members=members, removed=[], applied=applied,
                chains={}, skipped={}, rotate=False)

def check_sender(g, sender, epoch):
    """§13.3 step 3 (also used for distributions, §13.4)."""
    if sender not in g["members"]:
        if sender in g["removed"]:
            raise HushError("RemovedMember")
        if epoch > g["epoch"]:
            raise HushError("FromFutureEpoch")
        raise HushError("NotAMember")

def accept_distribution(m, from_ik, data, limits):
    d = decode("SenderKeyDistribution", data)
    g = copy.deepcopy(m.g)
    if d["group_id"] != g["gid"]:
        raise HushError("WrongGroup")
    if from_ik == m.ik:
        raise HushError("FromSelf")
    check_sender(g, from_ik, d.get("epoch", 0))
    chains = g["chains"].setdefault(from_ik, [])
    if any(ch["id"] == d.get("chain_id", 0) for ch in chains):
        raise HushError("Duplicate")
    it = d.get("iteration", 0)
    chains.append(dict(id=d.get("chain_id", 0), first=it, n=it, ck=d["chain_key"], spk=d["signing_key"]))
    while len(chains) > 1 + limits["max_old_chains"]:
        gone = chains.pop(0)["id"]
        g["skipped"][from_ik] = [k for k in g["skipped"].get(from_ik, []) if k[0] != gone]
    m.g = g

def group_receive(m, data, limits):
    """§13.3 receiving, checks in the stated order, committing only after AEAD success."""
    msg = decode("GroupMessage", data)                                  # 1
    cbytes = msg["content"]
    content = decode("GroupMessageContent", cbytes)
    g = copy.deepcopy(m.g)
    sender, epoch = content["sender"], content.get("epoch", 0)
    cid, it = content.get("chain_id", 0), content.get("iteration", 0)
    if content["group_id"] != g["gid"]:                                 # 2
        raise HushError("WrongGroup")
    if sender == m.ik:
        raise HushError("FromSelf")
    check_sender(g, sender, epoch)                                      # 3
    chain = next((ch for ch in g["chains"].get(sender, []) if ch["id"] == cid), None)
    if chain is None:                                                   # 4
        raise HushError("UnknownChain")
    if not verify(chain["spk"], b"hush group message v1" + cbytes, msg["signature"]):
        raise HushError("BadSignature")                                 # 5
    skipped = g["skipped"].setdefault(sender, [])
    if it < chain["first"]:                                             # 6
        raise HushError("KeyUnavailable")
    if it < chain["n"]:
        idx = next((i for i, k in enumerate(skipped) if k[:2] == (cid, it)), None)
        if idx is None:
            raise HushError("Duplicate")
        mk = skipped.pop(idx)[2]
    else:
        if it - chain["n"] > limits["max_forward_jump"]:
            raise HushError("TooFarAhead")
        while chain["n"] < it:
            chain["ck"], k = kdf_ck(chain["ck"])
            skipped.append((cid, chain["n"], k))
            chain["n"] += 1
        chain["ck"], mk = kdf_ck(chain["ck"])
        chain["n"] = it + 1
        del skipped[:max(0, len(skipped) - limits["max_skipped_keys"])]
    key, nonce = message_keys(mk, b"hush group keys v1")
    ad = g["gid"] + sender + epoch.to_bytes(8, "big") + u32be(cid) + u32be(it)
    pt = aead_open(key, nonce, ad, content["ciphertext"])               # 7
    m.g = g
    return pt

def members_list(members):
    return [{"identity_key": k, "role": members[k]} for k in sorted(members)]

def control_content(gid, epoch, parent, signer, action):
    return {"version": 1, "group_id": gid, "epoch": epoch, "parent": parent, "signer": signer, **action}

def apply_control(m, data, limits):
    """§13.5 applying a change, checks in the stated order."""
    cm = decode("ControlMessage", data)
    cbytes = cm["content"]
    c = decode("ControlContent", cbytes)
    digest = hashlib.sha256(cbytes).digest()
    g = copy.deepcopy(m.g)
    epoch, signer = c.get("epoch", 0), c["signer"]
    if c["group_id"] != g["gid"]:                                       # 1
        raise HushError("WrongGroup")
    if not verify(signer, b"hush group control v1" + cbytes, cm["signature"]):
        raise HushError("BadSignature")
    if epoch <= g["epoch"]:                                             # 2
        if (epoch, digest) in g["applied"]:
            raise HushError("Replayed")
        raise HushError("Conflicting" if epoch == g["epoch"] else "Stale")
    if epoch > g["epoch"] + 1:                                          # 3
        raise HushError("FromFuture")
    if c["parent"] != g["head"]:                                        # 4
        raise HushError("Conflicting")
    mem = g["members"]                                                  # 5
    if "create" in c:
        raise HushError("MisplacedCreate")
    need_admin = "leave" not in c
    if signer not in mem or (need_admin and mem[signer] != 1):
        raise HushError("Unauthorized")
    new, gone = dict(mem), None
    if "add" in c:
        target = c["add"]["identity_key"]
        if target in mem:
            raise HushError("AlreadyMember")
        if len(mem) + 1 > limits["max_members"]:
            raise HushError("GroupFull")
        new[target] = c["add"].get("role", 0)
    elif "leave" in c:
        gone = signer
    else:
        target = c.get("remove") or c.get("promote") or c.get("demote")
        if target not in mem:
            raise HushError("NotAMember")
        if "remove" in c:
            gone = target
        elif mem[target] == (1 if "promote" in c else 0):
            raise HushError("RoleUnchanged")
        else:
            new[target] = 1 if "promote" in c else 0
    if gone is not None:
        del new[gone]
    if new and 1 not in new.values():
        raise HushError("LastAdmin")
    if "remove" in c and gone == signer:
        raise HushError("RemoveSelf")
    g.update(members=new, epoch=epoch, head=digest)                     # 6
    g["applied"] = (g["applied"] + [(epoch, digest)])[-64:]
    if gone is not None:
        g["chains"].pop(gone, None)
        g["skipped"].pop(gone, None)
        g["removed"] = (g["removed"] + [gone])[-1024:]
        g["rotate"] = True
    m.g = g
    return c

def check_group(c, v):
    gid = h(v["group_id"])
    lim = dict(max_forward_jump=v.get("max_forward_jump", 2000), max_skipped_keys=v.get("max_skipped_keys", MAX_GROUP_SKIPPED),
               max_old_chains=v.get("max_old_chains", MAX_OLD_CHAINS), max_members=v.get("max_members", MAX_MEMBERS))
    ms = {}
    for e in v["members"]:
        ms[e["name"]] = GMember(e["name"], h(e["identity_seed"]))
        c.eq(f"members.{e['name']}.identity_key", h(e["identity_key"]), ms[e["name"]].ik)
    sends = {}
    for ei, e in enumerate(v["events"]):
        we, typ = f"group.events[{ei}] {e['type']}", e["type"]
        try:
            if typ == "create":
                by = ms[e["by"]]
                # `members` lists the others by name (not in README); the creator is the admin (§13.5)
                roles = {by.ik: 1, **{ms[x].ik: 0 for x in e["members"]}}
                content = control_content(gid, 0, bytes(32), by.ik, {"create": {"members": members_list(roles)}})
                emit_control(c, we, e, by, content)
                for x in [e["by"]] + e["members"]:
                    start_from_create(ms[x], h(e["control"]), lim)
                by.drawn += gid                                        # the creator drew the group id
            elif typ == "chain":
                m = ms[e["member"]]
                if m.mine is None or m.mine["id"] != e["chain_id"]:    # a new chain (§13.2): iteration 0
                    c.eq(we + ".cause", "rotation", e.get("cause"))
                    c.eq(we + " chain id non-zero and not recent", True, e["chain_id"] not in [0] + m.old_ids)
                    m.mine = dict(id=e["chain_id"], it=0, ck=h(e["chain_key"]), seed=h(e["signing_seed"]))
                    m.old_ids.append(e["chain_id"])
                    m.drawn += e["chain_id"].to_bytes(4, "little") + m.mine["ck"] + m.mine["seed"]
                    m.g["rotate"] = False
                else:                                                  # current chain handed to a newcomer (§13.4)
                    c.eq(we + ".cause", "handover", e.get("cause"))
                    c.eq(we + " no rotation pending when handing over", False, m.g["rotate"])
                c.eq(we + ".epoch/iteration", (m.g["epoch"], m.mine["it"]), (e["epoch"], e.get("iteration")))
                c.eq(we + ".chain_key", h(e["chain_key"]), m.mine["ck"])
                c.eq(we + ".signing_seed", h(e["signing_seed"]), m.mine["seed"])
                c.eq(we + ".signing_key", h(e["signing_key"]), ed_public(m.mine["seed"]))
                dist = encode("SenderKeyDistribution", {"version": 1, "group_id": gid, "epoch": m.g["epoch"],
                              "chain_id": m.mine["id"], "iteration": m.mine["it"], "chain_key": m.mine["ck"],
                              "signing_key": ed_public(m.mine["seed"])})
                c.eq(we + ".distribution", h(e["distribution"]), dist)
                for r in e["recipients"]:
                    accept_distribution(ms[r], m.ik, h(e["distribution"]), lim)
            elif typ == "send":
                m = ms[e["from"]]
                c.eq(we + " sender rotated after a removal", False, m.g["rotate"])
                ch = m.mine
                c.eq(we + ".index", len(sends), e["index"])
                sends[e["index"]] = e
                c.eq(we + ".epoch/chain_id/iteration", (m.g["epoch"], ch["id"], ch["it"]), (e["epoch"], e["chain_id"], e["iteration"]))
                c.eq(we + ".chain_key", h(e["chain_key"]), ch["ck"])
                ck, mk = kdf_ck(ch["ck"])
                key, nonce = message_keys(mk, b"hush group keys v1")
                ad = gid + m.ik + m.g["epoch"].to_bytes(8, "big") + u32be(ch["id"]) + u32be(ch["it"])
                ct = aead_seal(key, nonce, ad, h(e["plaintext"]))
                content = {"version": 1, "group_id": gid, "sender": m.ik, "epoch": m.g["epoch"], "chain_id": ch["id"],
                           "iteration": ch["it"], "ciphertext": ct}
                cbytes = encode("GroupMessageContent", content)
                sig = sign(ch["seed"], b"hush group message v1" + cbytes)
                for k, val in (("message_key", mk), ("aead_key", key), ("aead_nonce", nonce), ("ad", ad), ("ciphertext", ct),
                               ("content", cbytes), ("signature", sig),
                               ("message", encode("GroupMessage", {"content": cbytes, "signature": sig}))):
                    c.eq(f"{we}.{k}", h(e[k]), val)
                ch["ck"], ch["it"] = ck, ch["it"] + 1
            elif typ == "receive":
                pt = group_receive(ms[e["to"]], h(sends[e["message"]]["message"]), lim)
                c.eq(we + ".plaintext", h(e["plaintext"]), pt)
            elif typ == "control":
                by = ms[e["by"]]
                act = e["action"]
                tgt = ms[e["target"]].ik if e.get("target") else None
                action = {"add": lambda: {"add": {"identity_key": tgt, "role": e.get("role") or 0}},
                          "leave": lambda: {"leave": {}}}.get(act, lambda: {act: tgt})()
                c.eq(we + ".epoch", by.g["epoch"] + 1, e["epoch"])
                c.eq(we + ".parent", h(e["parent"]), by.g["head"])
                emit_control(c, we, e, by, control_content(gid, by.g["epoch"] + 1, by.g["head"], by.ik, action))
                # the signer commits its own change too (not in README: applied_by lists the others)
                for name in [e["by"]] + [x for x in e["applied_by"] if x != e["by"]]:
                    apply_control(ms[name], h(e["control"]), lim)
                    c.eq(f"{we} applied by {name}: head", h(e["digest"]), ms[name].g["head"])
            elif typ == "group_info":
                by, new = ms[e["by"]], ms[e["for"]]
                content = {"version": 1, "group_id": gid, "epoch": by.g["epoch"], "head": by.g["head"],
                           "members": members_list(by.g["members"]), "signer": by.ik}
                cbytes = encode("GroupInfoContent", content)
                sig = sign(by.seed, b"hush group info v1" + cbytes)
                c.eq(we + ".content", h(e["content"]), cbytes)
                c.eq(we + ".signature", h(e["signature"]), sig)
                c.eq(we + ".group_info", h(e["group_info"]), encode("GroupInfo", {"content": cbytes, "signature": sig}))
                accept_group_info(new, by.ik, h(e["group_info"]))
                c.eq(we + " newcomer state", (by.g["epoch"], by.g["head"], by.g["members"]),
                     (new.g["epoch"], new.g["head"], new.g["members"]))
            elif typ == "reject_message":
                m = ms[e["to"]]
                c.refuses(f"{we} ({e.get('note')})", e["error"], lambda: group_receive(m, h(e["message"]), lim), m.state)
            elif typ == "reject_control":
                m = ms[e["to"]]
                c.refuses(f"{we} ({e.get('note')})", e["error"], lambda: apply_control(m, h(e["control"]), lim), m.state)
            else:
                c.fail(we, "unknown event type")
        except HushError as err:
            c.fail(we, f"unexpected refusal {err}")
    # `random` (not in README): each member's RNG output.  Inferred layout: the creator's
    # group id, then per new chain u32le(chain_id) ‖ chain key ‖ signing seed.
    for name, r in v.get("random", {}).items():
        c.eq(f"group.random.{name}", h(r), ms[name].drawn)

def emit_control(c, we, e, by, content):
    """Recompute content, signature, control message and digest of a control event."""
    cbytes = encode("ControlContent", content)
    sig = sign(by.seed, b"hush group control v1" + cbytes)
    c.eq(we + ".content", h(e["content"]), cbytes)
    c.eq(we + ".signature", h(e["signature"]), sig)
    c.eq(we + ".control", h(e["control"]), encode("ControlMessage", {"content": cbytes, "signature": sig}))
    c.eq(we + ".digest", h(e["digest"]), hashlib.sha256(cbytes).digest())

def start_from_create(m, data, limits):
    """§13.5 Create: epoch 0, zero parent, sorted unique members, signer an admin, us listed."""
    cm = decode("ControlMessage", data)
    cbytes = cm["content"]
    c = decode("ControlContent", cbytes)
    keys = [x["identity_key"] for x in c.get("create", {}).get("members", [])]
    roles = {x["identity_key"]: x.get("role", 0) for x in c.get("create", {}).get("members", [])}
    if not verify(c["signer"], b"hush group control v1" + cbytes, cm["signature"]):
        raise HushError("BadSignature")
    if "create" not in c or c.get("epoch", 0) != 0 or c["parent"] != bytes(32):
        raise HushError("MisplacedCreate")
    if keys != sorted(set(keys)) or len(keys) > limits["max_members"] or roles.get(c["signer"]) != 1 or m.ik not in roles:
        raise HushError("InvalidCreate")           # class not named by SPEC §13.5
    digest = hashlib.sha256(cbytes).digest()
    m.g = new_group_state(c["group_id"], 0, digest, roles, [(0, digest)])

def accept_group_info(m, from_ik, data):
    """§13.6: signer is who sent it, an admin in the list; signature verifies; we are listed."""
    gi = decode("GroupInfo", data)
    c = decode("GroupInfoContent", gi["content"])
    roles = {x["identity_key"]: x.get("role", 0) for x in c.get("members", [])}
    if c["signer"] != from_ik or roles.get(c["signer"]) != 1 or m.ik not in roles:
        raise HushError("Unauthorized")            # class not named by SPEC §13.6
    if not verify(c["signer"], b"hush group info v1" + gi["content"], gi["signature"]):
        raise HushError("BadSignature")
    # the newcomer did not apply the change that produced `head`; it remembers it so that a
    # replay of that change is classed as Replayed (SPEC is silent, see the report).
    m.g = new_group_state(c["group_id"], c.get("epoch", 0), c["head"], roles, [(c.get("epoch", 0), c["head"])])


# ---------------------------------------------------------------- §15 attachments
CHUNK = 65536
SEGMENT = CHUNK + 16                              # a sealed full chunk: CHUNK plus the tag

def attachment_key(K):
    return hkdf(bytes(32), K, b"hush attachment v1", 32)

def chunk_nonce(i, final):
    # u88be(i) (SPEC §1 defines only u32be; read as the 11-byte big-endian encoding) ‖ flag
    return i.to_bytes(11, "big") + (b"\x01" if final else b"\x00")

def chunk_count(size):
    return max(1, -(-size // CHUNK))              # n = max(1, ceil(len(P) / CHUNK))

def attachment_seal(K, pt):
    """§15.1 writer: chunk i sealed with its counter and the final flag on the last one."""
    k, n = attachment_key(K), chunk_count(len(pt))
    return b"".join(aead_seal(k, chunk_nonce(i, i == n - 1), b"", pt[i * CHUNK:(i + 1) * CHUNK]) for i in range(n))

def attachment_open(K, blob):
    """§15.1 reader.  The segment lengths are checked before any segment is opened (SPEC is
    silent on which comes first when a blob has both a bad length and a bad chunk)."""
    if not blob:
        raise HushError("Sequence", "empty blob")
    n = -(-len(blob) // SEGMENT)
    if len(blob) - (n - 1) * SEGMENT < 16:
        raise HushError("Sequence", "last segment shorter than a tag")
    k = attachment_key(K)
    return b"".join(aead_open(k, chunk_nonce(i, i == n - 1), b"", blob[i * SEGMENT:(i + 1) * SEGMENT], cls=f"Chunk({i})")
                    for i in range(n))

def attachment_plaintext(size):
    return bytes(i % 251 for i in range(size))    # plaintext byte i is i mod 251 (SPEC §15.2)

def mutate_blob(blob, e):
    """The mutations of attachment.json's `invalid[]` (not in SPEC: from the file's description)."""
    m = e["mutation"]
    if m == "truncate":
        if e["to"] > len(blob):
            raise ValueError(f"truncate to {e['to']} is past the end ({len(blob)} bytes)")
        return blob[:e["to"]]
    if m == "flip":
        if not 0 <= e["at"] < len(blob):
            raise ValueError(f"flip at {e['at']} is outside the blob ({len(blob)} bytes)")
        return blob[:e["at"]] + bytes([blob[e["at"]] ^ 1]) + blob[e["at"] + 1:]
    if m == "swap_first_two_segments":
        if len(blob) < 2 * SEGMENT:
            raise ValueError(f"blob of {len(blob)} bytes has no two full segments")
        return blob[SEGMENT:2 * SEGMENT] + blob[:SEGMENT] + blob[2 * SEGMENT:]
    if m == "append":
        return blob + h(e["bytes"])
    raise ValueError(f"unknown mutation {m!r}")

def check_attachment(c, v):
    c.eq("attachment.chunk", v["chunk"], CHUNK)
    for i, e in enumerate(v["cases"]):
        w = f"attachment.cases[{i}]"
        K, pt = h(e["key"]), attachment_plaintext(e["plaintext_len"])
        blob = attachment_seal(K, pt)
        c.eq(w + " len(blob) = len(P) + 16·n", len(pt) + 16 * chunk_count(len(pt)), len(blob))
        c.eq(w + ".blob_len", e["blob_len"], len(blob))
        c.eq(w + ".blob_sha256", h(e["blob_sha256"]), hashlib.sha256(blob).digest())
        c.eq(w + ".blob_tail", h(e["blob_tail"]), blob[-48:])
        if "blob" in e:
            c.eq(w + ".blob", h(e["blob"]), blob)
        try:
            c.eq(w + " opens", pt, attachment_open(K, blob))
        except HushError as err:
            c.fail(w + " opens", f"refused: {err}")
    for i, e in enumerate(v["invalid"]):
        w = f"attachment.invalid[{i}] ({e['mutation']})"
        K = h(e["key"])
        try:
            blob = mutate_blob(attachment_seal(K, attachment_plaintext(e["plaintext_len"])), e)
        except ValueError as err:
            c.fail(w, str(err))
            continue
        try:
            attachment_open(K, blob)
            got = "accepted"                      # "accepted": the mutated blob still opens
        except HushError as err:
            got = err.cls
        c.eq(w + " error", e["error"], got)


# ---------------------------------------------------------------- pq_ratchet.json (§7.8)
class Adversary(Party):
    """§7.8.8's adversary: a copy of Alice's party. It breaks X25519, so it is handed each new
    ratchet private key Alice draws; it cannot know her ML-KEM randomness and uses its own."""

    def __init__(self, alice):
        super().__init__("eve", alice.seed, [])
        self.s, self.x25519, self.n = copy.deepcopy(alice.s), None, 0

    def draw(self, kind="x25519", length=32):
        if kind == "kem":
            self.n += 1
            return hashlib.sha256(b"eve" + self.n.to_bytes(8, "big")).digest() * (length // 32)
        return self.x25519

def pq_status(p):
    pq = p.s.get("pq")
    return {"epoch": pq and pq["epoch"], "mixed": pq and pq["mixable"]}

def pq_parties(k, alice_random, bob_random):
    keys = pq_bob_keys(dict(k, kem_last_resort=False))
    alice = Party("alice", h(k["alice_identity_seed"]), [h(x) for x in alice_random])
    bob = Party("bob", h(k["bob_identity_seed"]), [h(x) for x in bob_random])
    alice_start(alice, h(k["bundle"]))
    first = ratchet_send(alice, b"first")["wire"]
    receive(bob, keys, first)
    return alice, bob, keys, first

def check_pq_ratchet(c, v):
    for i, e in enumerate(v["erasure"]):                              # §7.8.3
        payload, k = h(e["bytes"]), e["k"]
        c.eq(f"erasure[{i}].k", k, -(-len(payload) // PQ_CHUNK_LEN))
        for ch in e["chunks"]:
            c.eq(f"erasure[{i}] chunk {ch['index']}", h(ch["chunk"]), rs_chunk(payload, ch["index"]))
        parity = {x: rs_chunk(payload, x) for x in range(256 - k, 256)}
        c.eq(f"erasure[{i}] decoded from the last {k} chunks", payload, rs_decode(parity)[:len(payload)])
    t = v["transcript"]
    k = t["keys"]
    alice, bob, keys, first = pq_parties(k, t["alice_random"], t["bob_random"])
    parties, sends = {"alice": alice, "bob": bob}, []
    for ei, e in enumerate(t["events"]):
        w = f"transcript.events[{ei}] {e['type']}"
        try:
            if e["type"] == "first":
                c.eq(w + ".wire", h(e["wire"]), first)
            elif e["type"] == "send":
                p = parties[e["from"]]
                out = ratchet_send(p, h(e["plaintext"]))
                sends.append(out["wire"])
                c.eq(w + ".wire", h(e["wire"]), out["wire"])
                c.eq(w + ".status", e["status"], pq_status(p))
            elif e["type"] == "receive":
                p = parties[e["to"]]
                pt, _ = receive(p, keys if p is bob else None, sends[e["message"]])
                c.eq(w + ".plaintext", h(e["plaintext"]), pt)
                c.eq(w + ".status", e["status"], pq_status(p))
            else:
                p = parties[e["to"]]
                c.refuses(f"{w} ({e['note']})", e["error"],
                          lambda: receive(p, keys if p is bob else None, h(e["wire"])),
                          lambda: (p.s, p.ri))
        except HushError as err:
            c.fail(w, f"refused: {err}")
    # §7.8.8: replay the compromise and find where this verifier's adversary loses track.
    m = v["compromise"]
    alice, bob, keys, _ = pq_parties(m["keys"], m["alice_random"], m["bob_random"])
    eve, sent_a, sent_b, healed = None, 0, 0, None
    for rnd in range(200):
        if eve is not None:
            sent_a += 1
            if eve.s["cks"] != alice.s["cks"]:
                healed = (rnd, sent_a - 1, sent_b)
                break
            ratchet_send(eve, b"a")
        receive(bob, keys, ratchet_send(alice, b"a")["wire"])
        wire = ratchet_send(bob, b"b")["wire"]
        if eve is not None:
            sent_b += 1
        before = (alice.s["dhs"], alice.s["pq"]["epoch"])
        receive(alice, None, wire)
        if eve is not None:
            eve.x25519 = alice.s["dhs"]
            try:
                receive(eve, None, wire)
            except HushError:
                healed = (rnd, sent_a, sent_b - 1)
                break
        if eve is None and before[1] == 2 and alice.s["pq"]["epoch"] == 3:
            eve, after_round = Adversary(alice), rnd
    c.eq("compromise.after_round", m["healed"]["after_round"], eve and after_round)
    c.eq("compromise healed at (alice_sent, bob_sent)", (m["healed"]["alice_sent"], m["healed"]["bob_sent"]),
         healed and healed[1:])


# ---------------------------------------------------------------- franking.json (§17)
def franking_commit(nf, content):
    return hmac256(nf, b"hush franking commitment v1" + content)

def franking_tag(kr, cf, s):
    def addr(user, device):
        u = user.encode()
        return u32be(len(u)) + u + u32be(device)
    m = (b"hush franking relay v1" + cf + addr(s["sender_user"], s["sender_device"])
         + addr(s["recipient_user"], s["recipient_device"]) + s["server_ms"].to_bytes(8, "big"))
    return hmac256(kr, m)

def franking_report(kr, e):
    """§17.2: the commitment opens, then the relay's tag matches; both in constant time."""
    if not hmac.compare_digest(franking_commit(h(e["franking_key"]), h(e["content"])), h(e["commitment"])):
        return "Commitment"
    if not hmac.compare_digest(franking_tag(kr, h(e["commitment"]), e["stamp"]), h(e["tag"])):
        return "RelayTag"
    return "ok"

def check_franking(c, v):
    kr = h(v["relay_key"])
    for i, e in enumerate(v["commitments"]):
        c.eq(f"commitments[{i}]", h(e["commitment"]), franking_commit(h(e["franking_key"]), h(e["content"])))
    # §16.2: a franked Content is the committed bytes, then field 15 (7a 20) with the key.
    f = v["franked_content"]
    c.eq("franked_content.plaintext", h(f["plaintext"]), h(f["content"]) + bytes([0x7a, 0x20]) + h(f["franking_key"]))
    c.eq("franked_content.commitment", h(f["commitment"]), franking_commit(h(f["franking_key"]), h(f["content"])))
    for i, e in enumerate(v["relay_tags"]):
        c.eq(f"relay_tags[{i}]", h(e["tag"]), franking_tag(kr, h(e["commitment"]), e["stamp"]))
    for e in v["reports"]:
        c.eq(f"reports[{e['name']}]", e["result"], franking_report(kr, e))
    # §17.4's worked example.
    cf = franking_commit(bytes([2] * 32), b"hello")
    c.eq("§17.4 cf", bytes.fromhex("bfac88d39d47754b44b6299a1536f989ece46cb89ae660e50df4cb477f459d89"), cf)
    stamp = {"sender_user": "mallory", "sender_device": 1, "recipient_user": "alice",
             "recipient_device": 2, "server_ms": 1700000000000}
    c.eq("§17.4 rf", bytes.fromhex("5386c5c82da957c4cb464ce7f8503d985b27a767a6799fade3c5c49f9a68c76a"),
         franking_tag(bytes([1] * 32), cf, stamp))


# ---------------------------------------------------------------- content.json (§16.2)
def content_bytes(e):
    """A text Content, canonical: 0a 10 id, 10 sent_ms, 1a text, 48 forwarded (if not 0)."""
    t = e["text"].encode()
    b = bytes([0x0a, 0x10]) + h(e["message_id"]) + bytes([0x10]) + varint(e["sent_ms"])
    b += bytes([0x1a]) + varint(len(t)) + t
    if e["forwarded"]:
        b += bytes([0x48]) + varint(e["forwarded"])
    return b

FORWARDED_MANY_TIMES, MAX_CHATS, MAX_CHATS_MANY_TIMES = 5, 5, 1   # §16.2

def check_content(c, v):
    for i, e in enumerate(v["contents"]):
        c.eq(f"contents[{i}].bytes", h(e["bytes"]), content_bytes(e))
        f = e["forwarded"]
        shown = "forwarded many times" if f >= FORWARDED_MANY_TIMES else "forwarded" if f >= 1 else "original"
        c.eq(f"contents[{i}].shown", e["shown"], shown)
    for i, e in enumerate(v["forwards"]):
        most = MAX_CHATS_MANY_TIMES if e["forwarded"] >= FORWARDED_MANY_TIMES else MAX_CHATS
        c.eq(f"forwards[{i}].allowed", e["allowed"], 1 <= e["chats"] <= most)


# ---------------------------------------------------------------- main
FILES = [("identity.json", check_identity), ("kdf.json", check_kdf), ("x3dh.json", check_x3dh),
         ("pqxdh.json", check_pqxdh),
         ("seal.json", check_seal), ("wire.json", check_wire), ("session.json", check_session),
         ("group.json", check_group), ("attachment.json", check_attachment),
         ("pq_ratchet.json", check_pq_ratchet), ("franking.json", check_franking),
         ("content.json", check_content)]

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    vdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "vectors")
    total_p = total_f = 0
    for name, fn in FILES:
        c = Checker()
        try:
            with open(os.path.join(vdir, name)) as f:
                fn(c, json.load(f))
        except Exception:                           # a crash is a failure of this file
            traceback.print_exc()
            c.failed += 1
        print(f"{name}: {c.passed} checks passed" + (f", {c.failed} failed" if c.failed else ""))
        total_p, total_f = total_p + c.passed, total_f + c.failed
    print(f"{total_p} passed, {total_f} failed")
    return 1 if total_f else 0

if __name__ == "__main__":
    sys.exit(main())
