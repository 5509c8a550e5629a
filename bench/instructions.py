#!/usr/bin/env python3
"""The fixed upstream and the fixed client of bench/instructions.sh (standard library only).

    instructions.py ports N              prints N free loopback TCP ports
    instructions.py upstream PORT_FILE   answers every request on a free loopback port,
                                         written to PORT_FILE once listening
    instructions.py wait PID URL TIMEOUT polls URL until it answers 200 (fails when the
                                         process PID is gone, or after TIMEOUT seconds)
    instructions.py client PORT N        sends exactly N requests, one keep-alive connection,
                                         one at a time, and checks every answer

Both run outside valgrind: only the proxy's instructions are counted. The client's request
i is a pure function of i (the cycle below), so a run of N requests is a prefix of a run of
more, and the difference of two runs is the cost of the requests between them.
"""

import os
import socket
import sys
import threading
import time
import urllib.request

BODY = b"ok\n"
POST_BODY = b'{"name":"ada"}\n'

# One cycle: a templated route, a paginated route, a wildcard route, a path only
# autoTemplate knows, and a POST with a body. N1 and N2 are multiples of its length.
CYCLE = 5


def request(i):
    k = i % CYCLE
    if k == 0:
        return "GET", f"/users/{i % 97}", b""
    if k == 1:
        return "GET", f"/orders?page={i % 7 + 1}&limit=20", b""
    if k == 2:
        return "GET", f"/static/app.{i % 3}.js", b""
    if k == 3:
        return "GET", f"/api/v1/items/{i % 50}", b""
    return "POST", "/users", POST_BODY


def read_head(sock, buf):
    """Reads up to the end of an HTTP head; returns (head, rest) or (None, b"") on EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def header(head, name):
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def read_exact(sock, buf, n):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in a body")
        buf += chunk
    return buf[:n], buf[n:]


def read_body(sock, head, buf):
    """The body (Content-Length or chunked) and what follows it."""
    length = header(head, "content-length")
    if length is not None:
        return read_exact(sock, buf, int(length))
    if (header(head, "transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed in a chunk size")
                buf += chunk
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data, buf = read_exact(sock, buf, size + 2)
            if size == 0:
                return body, buf
            body += data[:-2]
    return b"", buf


def serve(conn):
    buf = b""
    with conn:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            _, buf = read_body(conn, head, buf)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(BODY)).encode()
                + b"\r\n\r\n"
                + BODY
            )


def upstream(port_file):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{listener.getsockname()[1]}\n")
    # Renamed into place so a reader never sees half a port number.
    os.replace(port_file + ".tmp", port_file)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait(pid, url, timeout):
    # Straight to loopback, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if not running(pid):
            print(f"process {pid} exited before {url} answered", file=sys.stderr)
            return 1
        try:
            with opener.open(url, timeout=5) as answer:
                if answer.status == 200:
                    return 0
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"{url} did not answer 200 within {timeout:g} s", file=sys.stderr)
            return 1
        # Every poll is a request the proxy pays for: few and far apart, so their number
        # barely varies between runs, and a difference is spread over N2 - N1 requests.
        time.sleep(0.5)


def client(port, n):
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for i in range(n):
        method, path, body = request(i)
        head = f"{method} {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: routemeter-instructions\r\nAccept: */*\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"\r\n" + body)
        answer, buf = read_head(sock, buf)
        if answer is None:
            print(f"request {i} ({method} {path}): connection closed", file=sys.stderr)
            return 1
        got, buf = read_body(sock, answer, buf)
        status = answer.split(" ", 2)[1]
        if status != "200" or got != BODY:
            print(f"request {i} ({method} {path}): {answer.splitlines()[0]} {got!r}", file=sys.stderr)
            return 1
    sock.close()
    return 0


def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def main(argv):
    if len(argv) == 3 and argv[1] == "ports":
        ports(int(argv[2]))
        return 0
    if len(argv) == 3 and argv[1] == "upstream":
        upstream(argv[2])
        return 0
    if len(argv) == 5 and argv[1] == "wait":
        return wait(int(argv[2]), argv[3], float(argv[4]))
    if len(argv) == 4 and argv[1] == "client":
        return client(int(argv[2]), int(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
