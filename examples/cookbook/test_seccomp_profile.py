"""A seccomp profile from a Docker/OCI JSON file: this one denies changing file
modes (chmod and friends answer EPERM); everything else is allowed.

Run: pytest examples/cookbook/test_seccomp_profile.py -v
"""

import os
from pathlib import Path

import pytest

PROFILE = str(Path(__file__).with_name("no_chmod.json"))


@pytest.mark.isolated(seccomp=PROFILE)
def test_chmod_is_denied(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("echo hi\n")  # writing files is allowed
    with pytest.raises(PermissionError):
        os.chmod(script, 0o755)


@pytest.mark.isolated(seccomp=PROFILE)
def test_the_profile_is_in_force():
    with open("/proc/self/status") as f:
        assert "Seccomp:\t2" in f.read()  # 2: a filter is installed
