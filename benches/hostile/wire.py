"""The client side of the wire: WebSocket upgrades and masked frames, the messages of each
dialect, readers for the server's frames (`Reader` keeps payloads, `Frames` only counts them, so
multi-megabyte replies cost no copies), and /metrics."""

import json
import socket
import struct
import time


def upgrade(path):
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )


UPGRADE = upgrade("/")


def frame(payload, opcode=1):
    """A masked client frame (mask 0: masking with zeros keeps the bytes)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


def close_frame(code=1000):
    return frame(struct.pack(">H", code), opcode=8)


def handshake(room, user):
    """Scratch: joins `room`."""
    return frame(json.dumps({"method": "handshake", "project_id": room, "user": user}).encode())


def setmsg(name, value_json):
    """Scratch: sets a variable (`value_json` already JSON)."""
    return frame(('{"method":"set","name":"%s","value":%s}' % (name, value_json)).encode())


def rpc(action, request_id, payload_json):
    """Array-RPC: a request with a correlation id (`payload_json` already JSON)."""
    return frame(('["%s",%d,%s]' % (action, request_id, payload_json)).encode())


def studio(message):
    """MultiStudio: one message (a dict)."""
    return frame(json.dumps(message).encode())


def connect(port, extra=b"", rcvbuf=None, path="/", source=None, timeout=None):
    """A socket to the server on 127.0.0.1 that sent its upgrade to `path` and `extra`;
    `source`: the local address to connect from (another loopback address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if source:
        s.bind((source, 0))
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(upgrade(path) + extra)
    except OSError:
        s.close()
        raise
    return s


def reset(sock):
    """Closes without a close frame and without FIN: the peer sees a reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Reader:
    """Reads server frames from a blocking socket. A timeout leaves a partial frame buffered:
    calling again continues it."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def skip_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._need(len(self.buf) + 1)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]

    def next_frame(self):
        """(opcode, payload bytes) of the next frame."""
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
        return op, payload

    def next_text(self):
        while True:
            op, payload = self.next_frame()
            if op == 1:
                return payload.decode()
            if op == 8:
                raise EOFError

    def next_event(self):
        """The next text message (str), or ("close", code) / ("pong",) for those frames."""
        while True:
            op, payload = self.next_frame()
            if op == 1:
                return payload.decode()
            if op == 8:
                return ("close", close_code(payload))
            if op == 10:
                return ("pong",)


def close_code(payload):
    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005


class Frames:
    """Follows the server's frames in a byte stream (HTTP head first) without keeping their
    payloads, only the first PREFIX bytes of each."""

    PREFIX = 64

    def __init__(self):
        self.head_done = False
        self.pending = bytearray()
        self.left = 0
        self.op, self.size, self.prefix = 0, 0, bytearray()
        self.done = []  # (opcode, payload size, payload prefix) of each complete frame

    def feed(self, data):
        i, n = 0, len(data)
        if not self.head_done:
            self.pending += data
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                return
            rest = bytes(self.pending[end + 4 :])
            self.pending = bytearray()
            self.head_done = True
            data, n = memoryview(rest), len(rest)
        while i < n:
            if self.left:
                take = min(self.left, n - i)
                room = self.PREFIX - len(self.prefix)
                if room > 0:
                    self.prefix += data[i : i + min(take, room)]
                self.left -= take
                i += take
                if not self.left:
                    self._end()
                continue
            self.pending.append(data[i])
            i += 1
            if len(self.pending) < 2:
                continue
            short = self.pending[1] & 0x7F
            need = 4 if short == 126 else 10 if short == 127 else 2
            if len(self.pending) < need:
                continue
            if short == 126:
                size = struct.unpack(">H", self.pending[2:4])[0]
            elif short == 127:
                size = struct.unpack(">Q", self.pending[2:10])[0]
            else:
                size = short
            self.op, self.size, self.left = self.pending[0] & 0x0F, size, size
            self.prefix = bytearray()
            self.pending = bytearray()
            if size == 0:
                self._end()

    def _end(self):
        self.done.append((self.op, self.size, bytes(self.prefix)))

    def texts(self):
        return sum(1 for op, _, _ in self.done if op == 1)

    def closed(self):
        return any(op == 8 for op, _, _ in self.done)


def read_until(sock, frames, done, deadline, buf):
    """Reads into `frames` until `done(frames)`; False on timeout or end of stream."""
    view = memoryview(buf)
    while not done(frames):
        left = deadline - time.time()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            n = sock.recv_into(buf)
        except OSError:
            return False
        if n == 0:
            return False
        frames.feed(view[:n])
    return True


def scrape_metrics(port, names, timeout=5):
    """The named metrics from /metrics (summed over labels); {} when it cannot be read."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return {}
    found = {}
    for line in data.decode("utf-8", "replace").splitlines():
        for name in names:
            if line.startswith(name + " ") or line.startswith(name + "{"):
                try:
                    found[name] = found.get(name, 0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
    return {k: int(v) for k, v in found.items()}


def tally(table, key):
    """Counts one more `key` in a dict of outcomes."""
    table[key] = table.get(key, 0) + 1
