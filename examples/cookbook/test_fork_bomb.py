"""A fork bomb contained by the pids limit; nothing survives the test.

Run: pytest examples/cookbook/test_fork_bomb.py -v
"""

import os
import time

import pytest


@pytest.mark.isolated(pids=32, timeout=60)
def test_fork_bomb_hits_the_pids_limit(isolate_usage):
    children = []
    with pytest.raises(BlockingIOError):  # fork() fails with EAGAIN at the limit
        while True:
            pid = os.fork()
            if pid == 0:
                time.sleep(3600)  # never reaped here: the container's end kills it
                os._exit(0)
            children.append(pid)
    snap = isolate_usage.snapshot()
    assert snap.pids_limit == 32
    assert len(children) < 32 and snap.pids_current <= 32
