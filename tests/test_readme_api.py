"""The README's Python session runs as printed (so the documented API stays true)."""
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_session_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (session,) = [b for b in blocks if "run_imp(" in b]
    (tmp_path / "session.py").write_text(session)
    p = subprocess.run([sys.executable, "session.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("MLP-2 IMP ticket (59.0% sparse): ")
    assert lines[1].startswith("MLP-3 ETT ticket (61.1% sparse): ")
    # trained, not at chance (10 classes)
    assert all(float(line.rsplit(" ", 1)[1].rstrip("%")) > 90 for line in lines)
    assert (tmp_path / "mlp3_from_mlp2.safetensors").is_file() and list((tmp_path / "runs").glob("imp-*"))
