import platform
import subprocess
import sys

import pytest

from elth.training.allocator import tune_malloc

PROBE = "from elth.training.allocator import tune_malloc; print(tune_malloc(), tune_malloc())"


def probe(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "ELTH_MALLOC_TUNING"}
    if env_value is not None:
        env["ELTH_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_tuning_is_idempotent():
    assert tune_malloc() == tune_malloc()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_malloc_is_tuned_unless_switched_off():
    assert probe(None) == "True True"
    assert probe("0") == "False False"
