#!/usr/bin/env python3
"""qmp.py SOCKET COMMAND [JSON-ARGUMENTS]: run one QMP command on a QEMU
unix socket and print its "return" as JSON. Exit 1 if QEMU answers with an
error (printed on stderr), 3 if the socket cannot be reached.

Also the QMP client module of scripts/attach-memory and the VM test
(tests/vm/vm_test.sh): `from qmp import Qmp`."""
import json
import socket
import struct
import sys


class Qmp:
    """One QMP session: connect, read the greeting, negotiate capabilities.
    cmd() raises RuntimeError when QEMU answers with an error; OSError or
    ValueError come from the socket or a reply that is not JSON."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise OSError("not a QMP socket: %r" % greeting)
        self.cmd("qmp_capabilities")

    def peer_pid(self):
        """The pid of the QEMU at the other end (SO_PEERCRED)."""
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                     struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise OSError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:  # events arrive at any time; not ours
                return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        rep = self._read()
        if "error" in rep:
            raise RuntimeError("%s: %s" % (name, rep["error"].get("desc", rep["error"])))
        return rep.get("return")


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) > 1 else 2
    try:
        q = Qmp(sys.argv[1], timeout=60)
    except (OSError, ValueError) as e:
        print("qmp.py: %s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 3
    try:
        ret = q.cmd(sys.argv[2], **(json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
    except RuntimeError as e:
        print("qmp.py: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(ret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
