#!/usr/bin/env python3
"""A Scratch cloud-variable client for CI steps, on the standard library only (CI has
python3 and nothing more): a minimal RFC 6455 client, enough to join a room, set a variable
and read one back, over ws:// or wss:// (certificates not checked: CI's own).

  ws_client.py set URL PROJECT NAME VALUE   # sets, then waits until the server has handled it
  ws_client.py get URL PROJECT NAME         # prints the variable's value as the server sends it
  ws_client.py healthz URL                  # GET /healthz, exits 0 on "200"
"""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import urllib.parse

TIMEOUT = 20.0


def connect(url):
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme in ("wss", "https")
    port = parts.port or (443 if tls else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=TIMEOUT)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=parts.hostname)
    return sock, parts


class WebSocket:
    def __init__(self, url):
        self.sock, parts = connect(url)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path or "/"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: stratus-ci\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise SystemExit(f"upgrade refused: {head.decode(errors='replace')}")

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("connection closed by the server")
        self.buffer += data

    def _take(self, n):
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, opcode, payload):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send(0x1, text.encode())

    def recv(self):
        """The next text message or pong, as (opcode, payload); answers pings."""
        message = b""
        while True:
            first, second = self._take(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            payload = self._take(n)
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode == 0x8:
                raise SystemExit(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}")
            if opcode == 0xA:
                return opcode, payload
            message += payload
            if first & 0x80:
                return 0x1, message

    def handshake(self, project, user):
        self.send_text(json.dumps({"method": "handshake", "user": user, "project_id": project}))

    def sync(self):
        """A ping's pong proves the messages sent before it were handled; returns the text
        messages that came before it."""
        self.send(0x9, b"sync")
        texts = []
        while True:
            opcode, payload = self.recv()
            if opcode == 0xA and payload == b"sync":
                return texts
            if opcode == 0x1:
                texts.append(payload.decode())

    def close(self):
        self.send(0x8, struct.pack(">H", 1000))
        self.sock.close()


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "set" and len(argv) == 6:
        url, project, name, value = argv[2:]
        ws = WebSocket(url)
        ws.handshake(project, "ci-writer")
        ws.send_text(
            json.dumps({"method": "set", "user": "ci-writer", "project_id": project,
                        "name": name, "value": value})
        )
        ws.sync()
        ws.close()
        return 0
    if command == "get" and len(argv) == 5:
        url, project, name = argv[2:]
        ws = WebSocket(url)
        ws.handshake(project, "ci-reader")
        # The join's variables are sent before the pong of a ping sent after the handshake.
        for text in ws.sync():
            for line in text.splitlines():
                message = json.loads(line)
                if message.get("method") == "set" and message.get("name") == name:
                    print(message.get("value"))
                    ws.close()
                    return 0
        print(f"{name} not in room {project}", file=sys.stderr)
        return 1
    if command == "healthz" and len(argv) == 3:
        sock, parts = connect(argv[2])
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
        status = response.split(b"\r\n", 1)[0].decode(errors="replace")
        print(status)
        return 0 if " 200 " in status + " " else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
