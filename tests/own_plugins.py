"""The test plugins of one's own (fixtures/own_plugins: a model family, a dataset) and the `elth`
CLI run in a fresh process that finds them only through ELTH_PLUGINS, as ranks, workers and SLURM
jobs do."""
import os
import subprocess
import sys
from pathlib import Path

from elth import plugins

OWN_PLUGINS = Path(__file__).parent / "fixtures" / "own_plugins"


def elth_with_plugin(args: list[str], cwd: Path, module: str | None) -> subprocess.CompletedProcess:
    """`elth ARGS` in `cwd` with ELTH_PLUGINS naming `module` (None: no plugins at all)."""
    env = dict(os.environ)
    env.pop(plugins.PLUGINS_ENV, None)
    if module is not None:
        env[plugins.PLUGINS_ENV] = module
        env["PYTHONPATH"] = os.pathsep.join([str(OWN_PLUGINS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "elth", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
