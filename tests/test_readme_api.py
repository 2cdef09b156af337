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


def test_the_readme_dataset_of_ones_own_runs(tmp_path):
    """The "Datasets of your own" module, as printed, on a small .npz of its documented layout, then
    its `elth imp` line (shortened) in a fresh process that finds it through ELTH_PLUGINS."""
    import numpy as np

    text = README.read_text()
    (module,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "register_dataset(" in b]
    (tmp_path / "my_data.py").write_text(module)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "my_data.npz", x_train=g.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
             y_train=g.integers(0, 100, 64), x_test=g.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
             y_test=g.integers(0, 100, 32))
    (command,) = [line for line in text.splitlines() if line.startswith("elth imp --model cifar_resnet_20 --dataset my_data")]
    args = command.split()[1:]
    args[args.index("--data-dir") + 1] = str(tmp_path)
    args[args.index("--levels") + 1] = "1"
    args[args.index("--model") + 1] = "cifar_resnet_8_4"  # the documented line, on a network small enough for a test
    p = subprocess.run([sys.executable, "-m", "elth", *args, "--preset", "smoke", "--rewind", "2it", "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "ELTH_PLUGINS": "my_data",
                            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 0, p.stderr
    assert "my_data" in p.stdout and list(tmp_path.glob("runs/imp-*/level_1/ticket.safetensors"))
