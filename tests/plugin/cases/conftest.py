# These modules are inputs for tests/plugin/test_cases.py, not tests of ours.
collect_ignore_glob = ["c*.py"]
