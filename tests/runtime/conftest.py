from __future__ import annotations

import pytest

from pytest_isolate.runtime import Factory


@pytest.fixture
def factory(tmp_path):
    f = Factory(tmp_path / "state")
    yield f
    for cid in f.list():  # a failing test must not leave containers running
        f.load(cid).destroy()


@pytest.fixture
def run(factory):
    """run(target_or_argv, config=None, **process_kwargs) -> ExitStatus in a fresh container."""
    from pytest_isolate.runtime import Config, Process

    counter = iter(range(1000))

    def _run(what, config=None, **kw):
        proc = Process(what, **kw) if isinstance(what, list) else Process(target=what, **kw)
        with factory.create(f"c{next(counter)}", config or Config()) as c:
            return c.run(proc)

    return _run
