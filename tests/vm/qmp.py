#!/usr/bin/env python3
"""qmp.py SOCKET COMMAND [JSON-ARGUMENTS]: run one QMP command on a QEMU
unix socket and print its "return" as JSON. Exit 1 if QEMU answers with an
error (printed on stderr), 3 if the socket cannot be reached. Test helper."""
import json
import socket
import sys


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) > 1 else 2
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(sys.argv[1])
    except OSError as e:
        print("qmp.py: %s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 3
    f = s.makefile("rwb")

    def read():
        while True:
            line = f.readline()
            if not line:
                raise OSError("QMP closed the connection")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    read()  # greeting
    for req in ({"execute": "qmp_capabilities"},
                {"execute": sys.argv[2],
                 "arguments": json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}}):
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        rep = read()
        if "error" in rep:
            print("qmp.py: %s: %s" % (req["execute"], rep["error"].get("desc")), file=sys.stderr)
            return 1
    print(json.dumps(rep.get("return")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
