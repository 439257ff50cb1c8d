# A stand-in for systemd's notification socket: binds an AF_UNIX datagram socket (a path, or an
# abstract name given as "@name"), asks the kernel for sender credentials like systemd does
# (SO_PASSCRED), and prints one JSON line per datagram: {"state": ..., "pid": sender pid}.
import json
import socket
import struct
import sys

addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
print(json.dumps({"ready": True}), flush=True)
while True:
    msg, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", data[:12])[0]
    print(json.dumps({"state": msg.decode("utf-8", "replace"), "pid": pid}), flush=True)
