"""Assert that a parser stays under 50 MB: two ways.

Run: pytest examples/cookbook/test_parser_memory.py -v
"""

import json

import pytest

MB = 2**20


def make_document(records: int) -> str:
    return json.dumps([{"id": i, "name": f"item-{i}", "tags": ["a", "b"]}
                       for i in range(records)])


def parse(text: str) -> int:
    return len(json.loads(text))


@pytest.mark.isolated(memory="256M")
def test_parser_peak_measured_in_the_test(isolate_usage):
    """The whole test runs in a container; isolate_usage reads its cgroup."""
    text = make_document(20_000)  # about 1 MB of JSON
    before = isolate_usage.snapshot()
    assert parse(text) == 20_000
    after = isolate_usage.snapshot()
    used = after.memory_peak - before.memory_current
    assert used < 50 * MB, f"the parser used {used / MB:.1f} MB"


def test_parser_under_a_hard_50mb_limit(run_isolated):
    """Only the parser runs in a container, under a hard limit: going over is an OOM
    kill reported in the result, not a crash of the run."""
    text = make_document(20_000)
    result = run_isolated(parse, text, memory="50M", timeout=60)
    result.raise_for_status()  # fails the test with how it ended, e.g. OOM-killed
    assert result.value == 20_000
    assert result.usage.memory_peak < 50 * MB
