"""Start one container with the runtime alone and print what it sees inside.

    sudo .venv/bin/python examples/runtime_demo.py

No pytest involved: Factory, Config and Process from pytest_isolate.runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile

from pytest_isolate.runtime import PIPE, Config, Factory, Mount, Process


def look_around() -> dict[str, object]:
    """Runs inside the container; returns plain data (it comes back as JSON)."""
    with open("/proc/1/comm") as f:
        init = f.read().strip()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    try:
        with open("/etc/pytest-isolate-demo", "w"):
            pass
        root = "writable"
    except OSError as e:
        root = f"read-only ({os.strerror(e.errno or 0)})"
    return {
        "hostname": socket.gethostname(),
        "my pid": os.getpid(),
        "pid 1": init,
        "processes visible": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "network interfaces": [name for _, name in socket.if_nameindex()],
        "/tmp": os.listdir("/tmp"),
        "mounted here": sorted({m for m in mounts if m in ("/proc", "/tmp", "/dev/shm", "/mnt")}),
        "root filesystem": root,
        "NoNewPrivs": status.get("NoNewPrivs"),
        "CapEff": status.get("CapEff"),
    }


def main() -> None:
    shared = tempfile.mkdtemp(prefix="demo-data-")
    with open(os.path.join(shared, "hello.txt"), "w") as f:
        f.write("from the host\n")
    factory = Factory(tempfile.mkdtemp(prefix="demo-state-"))
    config = Config(
        hostname="demo-box",
        readonly=True,
        mounts=(*Config().mounts, Mount("/mnt", source=shared, readonly=True)),
    )
    print(f"host: hostname={socket.gethostname()} pid={os.getpid()}")
    with factory.create("demo", config) as container:
        status = container.run(Process(target=look_around))
        print(f"container {container.id!r}: {status.describe()}")
        for key, value in status.value.items():
            print(f"  {key:20} {json.dumps(value)}")
        # An argv payload, with its output captured by the host:
        again = factory.create("demo-sh", config)
        out = again.run(Process(["sh", "-c", "cat /mnt/hello.txt; ls /proc | grep -c '^[0-9]'"],
                                stdout=PIPE))
        print(f"sh in a second container: {out.stdout.decode().split()}")
        again.destroy()
    print(f"after destroy: containers left = {factory.list()}")
    shutil.rmtree(shared)
    shutil.rmtree(factory.root)


if __name__ == "__main__":
    main()
