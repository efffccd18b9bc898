#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ from the published test vectors.

Run from the repository root: python3 fuzz/seed_corpus.py
Each file is named by the SHA-256 of its content (as libFuzzer does), so reruns are stable.
"""
import hashlib
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = os.path.join(ROOT, "test-vectors", "vectors")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def load(name):
    with open(os.path.join(VEC, name)) as f:
        return json.load(f)


def put(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha256(data).hexdigest()[:40]), "wb") as f:
        f.write(data)


wire = load("wire.json")
for e in wire["valid"] + wire["invalid"]:
    b = bytes.fromhex(e["bytes"])
    t = e["type"]
    if t == "SessionMessage":
        put("session_message", b)
    elif t == "PrekeyBundle":
        put("prekey_bundle", b)
    elif t == "Header":
        put("header", b)
    kinds = {"GroupMessage": 0, "SenderKeyDistribution": 1, "ControlMessage": 2, "GroupInfo": 3}
    if t in kinds:
        put("group_wire", bytes([kinds[t]]) + b)

session = load("session.json")
for tr in session["transcripts"]:
    put("prekey_bundle", bytes.fromhex(tr["bundle"]))
    for e in tr["events"]:
        if e["type"] == "send":
            put("session_message", bytes.fromhex(e["wire"]))
            put("header", bytes.fromhex(e["header"]))
        elif e["type"] == "reject":
            put("session_message", bytes.fromhex(e["wire"]))
        elif e["type"] == "restore":
            put("sealed_state", bytes.fromhex(e["sealed_state"]))

pqxdh = load("pqxdh.json")
for c in pqxdh["cases"]:
    put("prekey_bundle", bytes.fromhex(c["bundle"]))
    put("session_message", bytes.fromhex(c["wire"]))
for e in pqxdh["bundle_negative"]:
    put("prekey_bundle", bytes.fromhex(e["bundle"]))
for e in pqxdh["responder_negative"]:
    put("session_message", bytes.fromhex(e["wire"]))

group = load("group.json")
for e in group["events"]:
    for field, kind in (("message", 0), ("distribution", 1), ("control", 2), ("group_info", 3)):
        v = e.get(field)
        if isinstance(v, str):
            put("group_wire", bytes([kind]) + bytes.fromhex(v))

for c in load("seal.json")["cases"] + load("seal.json")["invalid"]:
    put("sealed_state", bytes.fromhex(c["blob"]))
    put("state_bytes", bytes.fromhex(c["blob"])[33:])

put("state_bytes", b"")
put("state_bytes", bytes([0x08, 0x01]))
# Interaction fuzzers: a seed (8 bytes) then actions; a few hand-made starting points.
for seed in range(6):
    actions = bytes(((i * 37 + seed * 11) % 256) for i in range(120))
    put("session_interaction", seed.to_bytes(8, "big") + actions)
    put("group_interaction", seed.to_bytes(8, "big") + actions)
put("session_interaction", bytes(8) + bytes([0, 0, 2, 1, 0, 1, 1, 2, 0, 0, 3, 1, 0, 4, 1, 0, 3, 5, 5, 1]))
put("group_interaction", bytes(8) + bytes([0, 0, 1, 1, 0, 3, 3, 0, 0, 0, 1, 3, 0, 4, 1, 0, 0, 2, 0, 5, 3]))
# A long post-quantum ping-pong (odd seed: PQXDH and the post-quantum ratchet), so runs
# start from a conversation that crosses several epochs: send, deliver, answer, deliver,
# and every eighth round a seal/unseal of each side.
pingpong = bytearray()
for r in range(70):
    pingpong += bytes([0, 4, 2, 1, 0, 1, 4, 2, 0, 0])
    if r % 8 == 7:
        pingpong += bytes([5, 1, 5, 0])
put("session_interaction", (1).to_bytes(8, "big") + bytes(pingpong))
# A header with the post-quantum part (SPEC §7.8.2): epoch 3, mixed 2, chunk 7 of 104 bytes.
pq = bytes([0x08, 0x03, 0x10, 0x02, 0x18, 0x07, 0x22, 104]) + bytes(range(104))
put("header", bytes([0x08, 0x01, 0x12, 0x20]) + bytes(32) + bytes([0x2a, len(pq)]) + pq)
# Relay client frames (hush.relay.v1.ClientFrame), hand-encoded.
put("relay_frame", bytes([0x08, 0x01, 0x5a, 0x00]))  # request 1: Ping
addr = bytes([0x0a, 0x03]) + b"bob" + bytes([0x10, 0x01])
put("relay_frame", bytes([0x08, 0x02, 0x22, len(addr) + 2, 0x0a, len(addr)]) + addr)  # FetchBundle
send = bytes([0x0a, len(addr)]) + addr + bytes([0x12, 0x01, 0x07, 0x1a, 0x04]) + b"ctxt"
put("relay_frame", bytes([0x08, 0x03, 0x2a, len(send)]) + send)  # Send
put("relay_frame", bytes([0x08, 0x04, 0x32, 0x03, 0x0a, 0x01, 0x05]))  # Ack [5]
print("corpus written to", OUT)
