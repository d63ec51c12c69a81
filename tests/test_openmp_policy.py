"""Importing calmops_dagster makes OpenMP threads sleep, not spin, while they wait (unless the user chose)."""

import os
import subprocess
import sys


def _policy_after_import(env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    code = "import os, calmops_dagster; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_package_sets_a_passive_wait_policy_for_openmp():
    assert _policy_after_import(None) == "PASSIVE"


def test_a_policy_set_by_the_user_is_kept():
    assert _policy_after_import("ACTIVE") == "ACTIVE"
