"""Attacks on the result channel from inside a test: malformed, truncated, oversized
and forged frames. The host fails that test, never unpickles, never hangs, and goes on.
"""

import json
import os
import struct

EXPECT = {
    "test_garbage": ("failed", "malformed"),
    "test_truncated_frame": ("failed", ""),
    "test_oversized_frame_header": ("failed", "exceeds the cap"),
    "test_gigabyte_frame": ("failed", "exceeds the cap"),
    # the call may end before the host reads the frame: then the damage shows at
    # teardown, an error
    "test_pickle_frame": ("failed|error", "pickled result, refused"),
    "test_forged_report_for_another_test": ("error", "malformed message from the container"),
    "test_forged_duplicate_report": ("error", "malformed message from the container"),
    "test_forged_report_of_the_wrong_shape": ("failed", "malformed message"),
    "test_forged_sections": ("failed", "malformed message"),
    "test_forged_extra_reports_flood": ("failed", "malformed message"),
    "test_json_that_parses_30_times_larger": ("failed", "JSON items"),
    "test_after_the_attacks": ("passed", ""),
}

HEADER = struct.Struct(">2scxI")


def result_fd():
    """The result channel: the pipe that is not fd 3 (the link)."""
    for fd in range(4, 256):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                return fd
        except OSError:
            pass
    raise AssertionError("no result channel found")


def frame(kind, body):
    return HEADER.pack(b"PI", kind, len(body)) + body


def test_garbage():
    os.write(result_fd(), b"\xde\xad\xbe\xef" * 1000)


def test_truncated_frame():
    os.write(result_fd(), HEADER.pack(b"PI", b"J", 1000) + b"{")
    os._exit(0)


def test_oversized_frame_header():
    os.write(result_fd(), HEADER.pack(b"PI", b"J", 2**32 - 1))


def test_gigabyte_frame():
    fd = result_fd()
    os.write(fd, HEADER.pack(b"PI", b"J", 2**30))
    chunk = b" " * 2**20
    for _ in range(1024):
        os.write(fd, chunk)


def test_pickle_frame():
    import pickle

    class Trap:
        def __reduce__(self):
            return (os.system, ("touch /var/tmp/battery-pickle-trap",))

    os.write(result_fd(), frame(b"P", pickle.dumps(Trap())))


def test_forged_report_for_another_test():
    data = {"nodeid": "channel.py::test_after_the_attacks", "outcome": "failed",
            "when": "call", "longrepr": "forged", "location": ["channel.py", 1, "x"],
            "keywords": {}, "sections": [], "duration": 0, "user_properties": [],
            "$report_type": "TestReport"}
    msg = {"t": "message", "data": {"kind": "report", "data": data}}
    os.write(result_fd(), frame(b"J", json.dumps(msg).encode()))


def test_forged_duplicate_report(request):
    data = {"nodeid": request.node.nodeid, "outcome": "passed", "when": "setup",
            "longrepr": None, "location": ["channel.py", 1, "x"], "keywords": {},
            "sections": [], "duration": 0, "user_properties": [],
            "$report_type": "TestReport"}
    msg = {"t": "message", "data": {"kind": "report", "data": data}}
    os.write(result_fd(), frame(b"J", json.dumps(msg).encode()))


def _own_report(request, **fields):
    data = {"nodeid": request.node.nodeid, "outcome": "passed", "when": "call",
            "longrepr": None, "location": ["channel.py", 1, "x"], "keywords": {},
            "sections": [], "duration": 0, "user_properties": [],
            "$report_type": "TestReport"}
    data.update(fields)
    return data


def _send(msg):
    body = json.dumps({"t": "message", "data": msg}).encode()
    os.write(result_fd(), frame(b"J", body))


def test_forged_report_of_the_wrong_shape(request):
    # junitxml would unpack each property into (name, value): one item crashed it
    _send({"kind": "report", "data": _own_report(request, user_properties=[["a"]])})
    os._exit(0)


def test_forged_sections(request):
    _send({"kind": "report", "data": _own_report(request, outcome="failed",
                                                   sections=[["only-one"]])})
    os._exit(0)


def test_forged_extra_reports_flood(request):
    for _ in range(10_001):
        _send({"kind": "report", "extra": True, "data": _own_report(request)})
    os._exit(0)


def test_json_that_parses_30_times_larger():
    body = b'{"t":"x","p":[' + b"[]," * (5 * 2**20) + b"[]]}"  # 15 MiB, ~600 MB parsed
    os.write(result_fd(), frame(b"J", body))
    os._exit(0)


def test_after_the_attacks():
    assert not os.path.exists("/var/tmp/battery-pickle-trap")
