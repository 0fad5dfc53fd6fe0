#!/usr/bin/env python3
"""The floor: the least a Python bore server and client can do per tunnelled connection.

Not Spore and not for use: no secret, no limits, no TLS, no heartbeats, no
logging, no error handling worth the name.  One selectors loop per process,
bore's frames and flow (visitor -> Connection(id) -> a new connection with
Accept(id) -> splice), sends at once, half-close passed on.  It takes the
command line bench.py gives spore, so

    python3 bench/bench.py --spore 'python3 bench/floor.py'

shows what any Python implementation of this flow could reach on this
machine: the gap between it and Spore is Twisted and Spore; the gap between
it and direct is the protocol (three TCP connections per visitor instead of
one) and the kernel.

``floor.py --zero-copy server|local ...`` moves spliced bytes with
splice(2) through a kernel pipe per direction instead of recv/send, the
Linux zero-copy path; the pipe is created when the first byte arrives.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import socket
import sys
import uuid

sel = selectors.DefaultSelector()
ZERO_COPY = False
PIPE_SIZE = 1 << 20
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class Pipe:
    """One socket of a spliced pair (or one still reading frames)."""

    def __init__(self, sock: socket.socket, on_frame=None) -> None:
        self.sock, self.peer, self.out, self.on_frame = sock, None, b"", on_frame
        self.frames = b""
        self.read_done = self.write_done = False
        self.reading = self.writing = False
        self.kpipe: tuple[int, int] | None = None  # zero-copy: bytes on their way to this socket
        self.in_kpipe = 0

    def want(self, read: bool, write: bool) -> None:
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        if (read, write) == (self.reading, self.writing):
            return
        if not (self.reading or self.writing):
            sel.register(self.sock, events, self)
        elif events:
            sel.modify(self.sock, events, self)
        else:
            sel.unregister(self.sock)
        self.reading, self.writing = read, write

    def send(self, data: bytes) -> None:
        if not self.out:
            try:
                data = data[self.sock.send(data):]
            except BlockingIOError:
                pass
            except OSError:
                return self.close()
        self.out += data
        if self.out:
            self.want(False if self.peer is None else self.reading, True)
            if self.peer is not None:  # backpressure: stop reading the side that fills us
                self.peer.want(False, self.peer.writing)

    def on_readable(self) -> None:
        if ZERO_COPY and self.on_frame is None and not self.peer.out:  # early bytes go first
            return self.splice_readable()
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self.on_frame is not None:  # still reading NUL-terminated frames
            self.frames += data
            while self.on_frame is not None and b"\0" in self.frames:
                frame, _, self.frames = self.frames.partition(b"\0")
                self.on_frame(self, json.loads(frame))
            if not data:
                self.close()
            return
        if data:
            self.peer.send(data)
            return
        self.read_done = True
        self.want(False, self.writing)
        peer = self.peer
        if not peer.out:
            peer.shut()
        if self.write_done:
            self.close()

    def splice_readable(self) -> None:
        peer = self.peer
        if peer.kpipe is None:
            peer.kpipe = os.pipe()
            fcntl.fcntl(peer.kpipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            n = os.splice(self.sock.fileno(), peer.kpipe[1], PIPE_SIZE, flags=SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n:
            peer.in_kpipe += n
            peer.flush_kpipe()
            return
        self.read_done = True
        self.want(False, self.writing)
        if not peer.in_kpipe:
            peer.shut()
        if self.write_done:
            self.close()

    def flush_kpipe(self) -> None:
        try:
            while self.in_kpipe:
                self.in_kpipe -= os.splice(self.kpipe[0], self.sock.fileno(), self.in_kpipe, flags=SPLICE_FLAGS)
        except BlockingIOError:
            pass
        except OSError:
            return self.close()
        if self.in_kpipe:  # backpressure: stop reading the side that fills us
            self.want(self.reading, True)
            self.peer.want(False, self.peer.writing)
        elif self.writing:
            self.want(self.reading, False)
            if not self.peer.read_done:
                self.peer.want(True, self.peer.writing)
            else:
                self.shut()

    def on_writable(self) -> None:
        if self.kpipe is not None and not self.out:
            return self.flush_kpipe()
        try:
            self.out = self.out[self.sock.send(self.out):]
        except BlockingIOError:
            return
        except OSError:
            return self.close()
        if not self.out:
            self.want(self.reading, False)
            if self.peer is not None and not self.peer.read_done:
                self.peer.want(True, self.peer.writing)
            if self.peer is not None and self.peer.read_done:
                self.shut()

    def shut(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.write_done = True
        if self.read_done:
            self.close()

    def close(self) -> None:
        if self.reading or self.writing:
            sel.unregister(self.sock)
            self.reading = self.writing = False
        self.sock.close()
        if self.kpipe is not None:
            os.close(self.kpipe[0])
            os.close(self.kpipe[1])
            self.kpipe = None
        peer, self.peer = self.peer, None
        if peer is not None and peer.peer is self:
            peer.peer = None
            if not peer.out and not peer.in_kpipe:
                peer.close()

    def splice(self, other: Pipe, early: bytes = b"") -> None:
        self.on_frame = None
        self.peer, other.peer = other, self
        self.want(True, bool(self.out))
        other.want(True, bool(other.out))
        if early:
            other.send(early)


def nonblocking(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def frame(message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\0"


def server(args) -> None:
    pending: dict[str, Pipe] = {}
    control = {}

    def listener(port: int, on_accept) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.bind_addr, port))
        sock.listen(1024)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, on_accept)

    def on_frame(pipe: Pipe, message) -> None:
        if isinstance(message, dict) and "Hello" in message:
            pipe.on_frame = lambda p, m: None
            control["pipe"] = pipe
            listener(args.min_port, on_visitor)
            pipe.send(frame({"Hello": args.min_port}))
        elif isinstance(message, dict) and "Accept" in message:
            visitor = pending.pop(message["Accept"])
            pipe.splice(visitor, early=pipe.frames)

    def on_control(lsock) -> None:
        for _ in range(64):
            try:
                sock, _ = lsock.accept()
            except BlockingIOError:
                return
            pipe = Pipe(nonblocking(sock), on_frame)
            pipe.want(True, False)

    def on_visitor(lsock) -> None:
        for _ in range(64):
            try:
                sock, _ = lsock.accept()
            except BlockingIOError:
                return
            id = str(uuid.uuid4())
            pending[id] = Pipe(nonblocking(sock))  # not read until claimed
            control["pipe"].send(frame({"Connection": id}))

    listener(args.control_port, on_control)
    print(f"listening on {args.bind_addr}:{args.control_port}", flush=True)  # what benchmarks wait for
    loop()


def local(args) -> None:
    def connect(host: str, port: int) -> socket.socket:
        sock = nonblocking(socket.socket())
        sock.connect_ex((host, port))
        return sock

    def on_control_frame(pipe: Pipe, message) -> None:
        if isinstance(message, dict) and "Hello" in message:
            print(f"listening at {args.to}:{message['Hello']}", flush=True)
        elif isinstance(message, dict) and "Connection" in message:
            data, svc = Pipe(connect(args.to, args.control_port)), Pipe(connect(args.local_host, args.local_port))
            both = {"n": 0}

            def connected(_pipe) -> None:
                both["n"] += 1
                if both["n"] == 2:
                    data.splice(svc)

            data.out = frame({"Accept": message["Connection"]})  # sent once connected
            for p in (data, svc):
                p.on_connected = connected
                p.want(False, True)

    ctl = Pipe(nonblocking(socket.create_connection((args.to, args.control_port))), on_control_frame)
    ctl.send(frame({"Hello": args.port}))
    ctl.want(True, False)
    loop()


def loop() -> None:
    while True:
        for key, events in sel.select():
            target = key.data
            if not isinstance(target, Pipe):
                target(key.fileobj)
                continue
            if events & selectors.EVENT_WRITE:
                hook = getattr(target, "on_connected", None)
                if hook is not None:  # a connect finished
                    target.on_connected = None
                    target.on_writable()
                    target.want(False, bool(target.out))
                    hook(target)
                    continue
                target.on_writable()
            if events & selectors.EVENT_READ and target.reading:
                target.on_readable()


def parse_args(option: str, help: str) -> argparse.Namespace:
    """The command line bench.py gives spore, with one flag of a floor's own (``option``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument(option, action="store_true", help=help)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind-addr", default="127.0.0.1")
    s.add_argument("--control-port", type=int, default=7835)
    s.add_argument("--min-port", type=int, required=True)
    s.add_argument("--max-port", type=int)
    c = sub.add_parser("local")
    c.add_argument("local_port", type=int)
    c.add_argument("--to", required=True)
    c.add_argument("-l", "--local-host", default="127.0.0.1")
    c.add_argument("--control-port", type=int, default=7835)
    c.add_argument("--port", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    global ZERO_COPY
    args = parse_args("--zero-copy", "splice(2) spliced bytes through a kernel pipe")
    ZERO_COPY = args.zero_copy
    try:
        (server if args.command == "server" else local)(args)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
