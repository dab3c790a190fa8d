#!/usr/bin/env python3
"""Writes the seed corpora for parse_message, http_request and frames from real client traffic.

Run from anywhere: python3 fuzz/make_corpus.py. Seeds are named by content, so running it again
only adds what changed. The session target's seeds come from fuzzing (cargo fuzz cmin), not
from here: its input is an `arbitrary` encoding, not traffic.
"""

import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Messages as real clients send them (one WebSocket text frame each).
MESSAGES = [
    # Scratch GUI / TurboWarp: handshake, then sets, each frame ending in a newline.
    '{"method":"handshake","user":"griffpatch","project_id":"1234"}\n',
    '{"method":"set","name":"☁ score","value":1000,"project_id":"1234","user":"griffpatch"}\n',
    # TurboWarp packager: no trailing newline, numbers as numbers.
    '{"method":"set","name":"☁ score","value":1000,"project_id":"1234","user":"p"}',
    '{"method":"set","name":"☁ score","value":"1000","user":"p","project_id":"1234"}',
    # scratchattach: escaped cloud sign, several objects per frame, string values.
    '{"method": "handshake", "user": "bot", "project_id": "1234"}\n',
    '{"method": "set", "name": "\\u2601 a", "value": "1"}\n{"method": "set", "name": "\\u2601 b", "value": "2"}\n',
    # project_id as a number, user missing, odd numbers.
    '{"method":"handshake","project_id":1234,"user":"n1"}',
    '{"method":"handshake","project_id":1.5e3}',
    '{"method":"set","name":"☁ x","value":-0.5e-3}',
    '{"method":"set","name":"☁ x","value":18446744073709551615}',
    '{"method":"set","name":"☁ x","value":1e400}',
    '{"method":"create","name":":cloud: y","value":"-.5"}',
    '{"method":"rename","name":"☁ score","new_name":"☁ best"}',
    '{"method":"delete","name":"☁ best"}',
    '{"method":"set","name":"☁ x","value":null}',
    '{"method":"set","name":"☁ x","value":"abc"}',
    '{"method":"bogus"}',
    # cloud-server's legacy protocol.
    '{"kind":"handshake","room":"1","username":"u","variables":{"☁ a":"1"}}',
    '{"kind":"handshake","room":"1234","username":"legacy_1","variables":{"☁ a":"1","☁ b":"2"}}',
    '{"kind":"handshake","room":"1","username":"u","variables":{}}',
    '{"kind":"set","variable":"☁ a","value":"42"}',
    '{"kind":"set","variable":"☁ a","value":42}',
    '{"kind":"set","variable":"☁ missing","value":"1"}',
    # Not objects, broken JSON, huge nesting.
    '[1,2,3]',
    '{"method":"set","name":"☁ x","value":1',
    '\n\n  \n',
    '[' * 64 + ']' * 64,
]

# Array-RPC (`/ws/world/<room>`): one JSON array per message, the id exactly when there are three.
RPC = [
    '["authenticate",{"client_id":"3f9c"}]',
    '["authenticate",1,{"username":"griffpatch","client_id":"tab-1"}]',
    '["authenticate",{"username":"bad name!"}]',
    '["authenticate",{"client_id":""}]',
    '["ping",1732800000000]',
    '["ping","x",{"deep":[[[[1]]]]}]',
    '["cloud.set",1,{"name":"☁ score","value":13}]',
    '["cloud.set",{"name":"☁ score","value":"13"}]',
    '["cloud.set",2,{"name":"score","value":1}]',
    '["cloud.set",3,{"name":"☁ x","value":1e400}]',
    '["cloud.get",{"a":1},{}]',
    '["cloud.rename",4,{"name":"☁ score","new_name":"☁ best"}]',
    '["cloud.delete",[5],{"name":"☁ best"}]',
    '["nope",6,{}]',
    '["cloud.set"]',
    '[1,2,3,4]',
    '{"not":"an array"}',
    '["ping",' + '[' * 40 + ']' * 40 + ',1]',
]

# MultiStudio: a HELLO first (on `/ws/multistudio` or any path), then several rooms, `rid`s.
STUDIO = [
    '{"kind":"HELLO","username":"studio_1","rid":"a"}',
    '{"kind":"HELLO","username":"studio_1","reconnect_token":"nope"}',
    '{"kind":"HELLO","username":"no way!"}',
    '{"kind":"JOIN_ROOM","room":"1","rid":"b"}',
    '{"kind":"JOIN_ROOM","room":42}',
    '{"kind":"JOIN_ROOM","room":"2","rid":"c"}',
    '{"kind":"SET","room":"1","name":"☁ a","value":7,"rid":"d"}',
    '{"kind":"SET","room":"1","name":"☁ a","value":"x"}',
    '{"kind":"SET","room":"9","name":"☁ a","value":1}',
    '{"kind":"LEAVE_ROOM","room":"1","rid":"e"}',
    '{"kind":"BOGUS","rid":5}',
    '{"rid":"r","kind":"SET"}',
]

# Pieces separated by 0 bytes: parse_message feeds them as consecutive frames of one session.
RPC_SEQUENCES = [
    [RPC[1], RPC[6], RPC[7], RPC[10], RPC[11], RPC[12], RPC[4]],
    [RPC[0], RPC[8], RPC[9], RPC[13], RPC[14]],
]
STUDIO_SEQUENCES = [
    [STUDIO[0], STUDIO[3], STUDIO[5], STUDIO[6], STUDIO[7], STUDIO[9], STUDIO[8]],
    [STUDIO[3], STUDIO[1], STUDIO[4], STUDIO[10]],
]

# Pieces separated by 0 bytes: parse_message feeds them as consecutive frames of one session.
SEQUENCES = [
    [MESSAGES[0], MESSAGES[1], MESSAGES[12], MESSAGES[13]],
    [MESSAGES[17], MESSAGES[20], MESSAGES[21]],
]

UPGRADE = (
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
BROWSER_UPGRADE = (
    "GET / HTTP/1.1\r\nHost: clouddata.turbowarp.org\r\nConnection: Upgrade\r\n"
    "Pragma: no-cache\r\nCache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0\r\n"
    "Upgrade: websocket\r\nOrigin: https://turbowarp.org\r\nSec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)

# The upgrade path picks the dialect: array-RPC in a room, MultiStudio, or sniffed from the first
# message on any other path.
WORLD_UPGRADE = UPGRADE.replace("GET / ", "GET /ws/world/1 ")
WORLD_1234_UPGRADE = UPGRADE.replace("GET / ", "GET /ws/world/1234?v=2 ")
STUDIO_UPGRADE = UPGRADE.replace("GET / ", "GET /ws/multistudio ")

HEADS = [
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.1\r\n\r\n",
    "GET /robots.txt?x=1 HTTP/1.0\r\n\r\n",
    "GET /nope HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "DELETE / HTTP/1.1\r\n\r\n",
    UPGRADE,
    BROWSER_UPGRADE,
    UPGRADE.replace("\r\n\r\n", "\r\nCookie: a=b; scratchsessionsid=\"x\"; c=d\r\n\r\n"),
    UPGRADE.replace("\r\n\r\n", "\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n\r\n"),
    UPGRADE.replace("\r\n\r\n", "\r\nX-Forwarded-For: 2001:db8::1\r\n\r\n"),
    UPGRADE.replace("\r\n\r\n", "\r\nX-Forwarded-For: junk\r\n\r\n"),
    UPGRADE.replace("Version: 13", "Version: 8"),
    UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive"),
    UPGRADE.replace("GET", "POST"),
    UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", ""),
    UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "k" * 65),
    UPGRADE.replace("\r\n", "\n"),
    WORLD_UPGRADE,
    STUDIO_UPGRADE,
    UPGRADE.replace("GET / ", "GET /ws/world/a%20b%E2%98%81?token=1 "),
    UPGRADE.replace("GET / ", "GET /ws/world/%zz "),
    "GET / HTTP/1.1\r\nHost: x\r\n",
    "\x00\x01garbage\r\n\r\n",
    "GET / HTTP/1.1\r\n" + "X: y\r\n" * 49 + "\r\n",
    "GET / HTTP/1.1\r\nX: \xff\xfe\r\nUpgrade: websocket\r\n\r\n",
    # Past MAX_HEAD_BYTES without an end (431); also lifts libFuzzer's -max_len above 8 KiB.
    "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + "a" * 8300,
]


def mask_frame(opcode, payload, key=b"\x12\x34\x56\x78", fin=True):
    """A client-to-server frame: always masked."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def text(message):
    return mask_frame(0x1, message.encode())


def close(code=1000, reason=b""):
    return mask_frame(0x8, struct.pack("!H", code) + reason)


def write(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def main():
    for message in MESSAGES:
        write("parse_message", message)
    for sequence in SEQUENCES + RPC_SEQUENCES + STUDIO_SEQUENCES:
        write("parse_message", "\x00".join(sequence))
    for message in RPC + STUDIO:
        write("parse_message", message)
    # A MultiStudio HELLO sniffed on any path, followed by more in the same (Scratch) frame.
    write("parse_message", STUDIO[0] + "\n" + STUDIO[3] + "\n" + STUDIO[6])

    for head in HEADS:
        write("http_request", head.encode("latin-1"))

    up = UPGRADE.encode()
    scratch_hello = text(MESSAGES[0])
    legacy_hello = text(MESSAGES[17])
    frames = [
        # A viewer: joins and only listens (most clients, most of the time).
        up + scratch_hello,
        up + text('{"method":"handshake","user":"viewer","project_id":1234}')
        + mask_frame(0x9, b"") + mask_frame(0xA, b""),
        # A Scratch session: handshake, sets, rename, delete, close.
        up + scratch_hello + text(MESSAGES[1]) + text(MESSAGES[2]) + close(),
        up + scratch_hello + text(MESSAGES[5]) + text(MESSAGES[12]) + text(MESSAGES[13]),
        BROWSER_UPGRADE.encode() + scratch_hello + text(MESSAGES[1]) + close(1001),
        # scratchattach: one frame, several objects.
        up + text(MESSAGES[4]) + text(MESSAGES[5]),
        # Legacy session.
        up + legacy_hello + text(MESSAGES[20]) + text(MESSAGES[22]),
        # Control frames: ping with payload, pong, binary, close with reason, username change.
        up + scratch_hello + mask_frame(0x9, b"hi") + mask_frame(0xA, b"")
        + mask_frame(0x2, b"\x00\x01") + close(4100, b"bye"),
        # A message in fragments (text + continuation), and a 16-bit length.
        up + mask_frame(0x1, MESSAGES[0][:20].encode(), fin=False)
        + mask_frame(0x0, MESSAGES[0][20:].encode()) + text(MESSAGES[1]),
        up + scratch_hello + text('{"method":"set","name":"☁ big","value":"' + "9" * 300 + '"}'),
        # Protocol errors: unmasked frame, invalid UTF-8, reserved opcode, close without code.
        up + b"\x81\x05hello",
        up + mask_frame(0x1, b"\xff\xfe"),
        up + mask_frame(0x3, b""),
        up + mask_frame(0x8, b""),
        # Not a handshake first; second handshake; junk after the upgrade.
        up + text(MESSAGES[1]),
        up + scratch_hello + scratch_hello,
        up + b"\x00" * 16,
        # Plain HTTP instead of an upgrade; the head in a request with a cookie.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        UPGRADE.replace("\r\n\r\n", "\r\nCookie: scratchsessionsid=1\r\n\r\n").encode() + scratch_hello,
        # Array-RPC on /ws/world/<room>: ping before authenticating, then a session in room
        # 1234 (where the fuzz target's second client sets variables); a bad room; no array.
        WORLD_UPGRADE.encode() + text(RPC[4]) + text(RPC[1]) + text(RPC[6]) + text(RPC[10]),
        WORLD_1234_UPGRADE.encode() + text(RPC[0]) + mask_frame(0x9, b"") + text(RPC[7])
        + text(RPC[11]) + text(RPC[12]) + close(),
        WORLD_1234_UPGRADE.encode() + text(RPC[1]),
        WORLD_UPGRADE.encode() + text(RPC[2]),
        WORLD_UPGRADE.encode() + text(RPC[16]) + text(RPC[4]),
        UPGRADE.replace("GET / ", "GET /ws/world/%zz ").encode() + text(RPC[0]),
        # MultiStudio on its path and sniffed from a HELLO on /; rooms 1 and 1234.
        STUDIO_UPGRADE.encode() + text(STUDIO[0]) + text(STUDIO[3])
        + text('{"kind":"JOIN_ROOM","room":"1234","rid":"x"}') + text(STUDIO[6]) + text(STUDIO[9]),
        STUDIO_UPGRADE.encode() + text('{"kind":"HELLO","username":"s2"}')
        + text('{"kind":"JOIN_ROOM","room":1234}') + close(1000),
        STUDIO_UPGRADE.encode() + text(STUDIO[3]) + text(STUDIO[2]),
        up + text(STUDIO[0]) + text('{"kind":"JOIN_ROOM","room":"1234"}') + text(STUDIO[10]),
    ]
    for data in frames:
        write("frames", data)
        # The frames target draws its hostile schedule from the input's last 8 bytes. The same
        # traffic ending in an ignored binary frame with an 8-byte payload lets mutations try
        # schedules without changing what the client says.
        for salt in (b"\x00" * 8, hashlib.sha1(data).digest()[:8]):
            write("frames", data + mask_frame(0x2, salt))


if __name__ == "__main__":
    main()
