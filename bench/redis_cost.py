#!/usr/bin/env python3
"""Redis CPU per operation for what each layer sends, against the floor's GET.

Starts its own redis-server on a free port, sends each operation 200,000 times in pipelined
batches of 64 (as the layers' shared connection does under load), and divides the server's
user + system CPU time (from /proc/<pid>/stat) by the count. The client's own speed does not
enter the figure. Usage: bench/redis_cost.py [COUNT]
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

root = pathlib.Path(__file__).resolve().parent.parent
scripts = root / "src" / "store" / "scripts"
count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
server = subprocess.Popen(
    ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
    stdout=subprocess.DEVNULL,
)


def cpu_seconds():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def connect():
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


conn = connect()


def round_trip(payload):
    # a PING after the batch marks its end: every reply before it has arrived once PONG has
    conn.sendall(payload + command("PING"))
    received = b""
    while not received.endswith(b"+PONG\r\n"):
        received += conn.recv(1 << 20)
    return received


def load(name):
    reply = round_trip(command("SCRIPT", "LOAD", (scripts / name).read_text()))
    return reply.split(b"\r\n")[1].decode()


def measure(label, make, batch=64):
    start = cpu_seconds()
    for first in range(0, count, batch):
        round_trip(b"".join(make(i) for i in range(first, first + batch)))
    per_op = (cpu_seconds() - start) / count * 1e6
    print(f"{label:52s} {per_op:6.2f} µs")


gcra, window = load("gcra.lua"), load("fixed_window.lua")
round_trip(command("SET", "hot", "x" * 64))
print(f"Redis CPU per operation ({count} each, pipelined by 64):")
measure("GET of an existing key (floor, scenario 2)", lambda i: command("GET", "hot"))
measure("GET of a missing key (floor, distinct paths, 2u)", lambda i: command("GET", f"g:{i}"))
measure("EVALSHA GCRA on one key (allowed)", lambda i: command("EVALSHA", gcra, 1, "gcra", 1, 10**12))
measure(
    "EVALSHA fixed window on one key (allowed)",
    lambda i: command("EVALSHA", window, 1, "window", 10**12, 3_600_000),
)
measure(
    "MULTI SET NX PX / PTTL EXEC, a new key (cooldown)",
    lambda i: command("MULTI")
    + command("SET", f"c:{i}", "ticket", "NX", "PX", 60_000)
    + command("PTTL", f"c:{i}")
    + command("EXEC"),
)
measure("SET NX PX alone, a new key", lambda i: command("SET", f"s:{i}", "ticket", "NX", "PX", 60_000))
server.terminate()
server.wait()
