"""Faults: each ends as a report naming what happened; the test after them passes."""

import os
import signal
import threading
import time

import pytest

EXPECT = {
    "test_segfault": ("failed", "crashed with signal 11 (SIGSEGV)"),
    "test_abort": ("failed", "crashed with signal 6 (SIGABRT)"),
    "test_exit_zero": ("failed", "exited with status 0 before reporting a result"),
    "test_sigkill_itself": ("failed", "killed by signal 9 (SIGKILL)"),
    "test_closes_stdout_and_stderr": ("passed", ""),
    "test_fork_escapes_into_the_runner": ("passed", ""),
    "test_deadlock": ("failed", "timed out after 3 s"),
    "test_ignores_sigterm": ("failed", "timed out after 3 s"),
    "test_after_the_faults": ("passed", ""),
}


def test_segfault():
    import ctypes

    ctypes.string_at(0)


def test_abort():
    os.abort()


def test_exit_zero():
    os._exit(0)


def test_sigkill_itself():
    os.kill(os.getpid(), signal.SIGKILL)


def test_closes_stdout_and_stderr():
    os.close(1)
    os.close(2)


def test_fork_escapes_into_the_runner():
    if os.fork() == 0:
        return  # the child returns into pytest and would run the rest of the run
    os.wait()


@pytest.mark.isolated(timeout=3)
def test_deadlock():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


@pytest.mark.isolated(timeout=3)
def test_ignores_sigterm():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(1)


def test_after_the_faults():
    pass
