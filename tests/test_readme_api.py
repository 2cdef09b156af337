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


def code_blocks(text: str, lang: str = "") -> list[str]:
    """The bodies of the README's fenced blocks of language `lang` ("" for unmarked ones)."""
    blocks, body, inside = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if inside is None:
                inside, body = line[3:].strip(), []
            else:
                if inside == lang:
                    blocks.append("\n".join(body) + "\n")
                inside = None
        elif inside is not None:
            body.append(line)
    return blocks


def _own_family_workspace(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The README's my_models.py in `tmp_path`; the README text; an environment as a new user's shell
    has it: elth's console script on PATH, no PYTHONPATH, no ELTH_PLUGINS."""
    text = README.read_text()
    (module,) = [b for b in code_blocks(text, "python") if b.startswith("# my_models.py")]
    (tmp_path / "my_models.py").write_text(module)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELTH_PLUGINS")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return text, env


def test_the_readme_family_of_ones_own_runs_from_the_shell_as_printed(tmp_path):
    """The shell lines under "Networks of your own", in bash, with the `elth` console script (which,
    unlike `python -m`, does not put the working directory on the Python path): only the dataset,
    the levels and the rewind point are made small."""
    text, env = _own_family_workspace(tmp_path)
    (block,) = [b for b in code_blocks(text) if "export ELTH_PLUGINS=my_models" in b]
    script = (block.replace("fashion_mnist", "digits").replace("--levels 5", "--levels 1")
              .replace("level_5", "level_1").replace("--rewind 100it", "--rewind 10it"))
    assert script.count("\n") == 3 and "--no-progress" not in script
    p = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    # The protocol it used is said before any training: the paper has none for this family.
    first = p.stderr.splitlines()[0]
    assert first.startswith("note: the paper has no protocol for my_net_4: training follows the 'short' preset (3ep")
    assert "3ep per level" in p.stdout
    assert (tmp_path / "my_net_8.safetensors").is_file()


def test_plugins_named_by_path_or_beside_the_working_directory_and_bad_names_fail_at_start(tmp_path):
    _, env = _own_family_workspace(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inspect = ["elth", "train", "--model", "my_net_2", "--dataset", "digits", "--preset", "smoke", "--no-progress"]
    by_path = subprocess.run(inspect, cwd=elsewhere, capture_output=True, text=True, timeout=300,
                             env={**env, "ELTH_PLUGINS": "../my_models.py"})
    assert by_path.returncode == 0, by_path.stderr
    for value, says in [("nosuch", "ELTH_PLUGINS: no module named 'nosuch' on the Python path or in the working directory"),
                        ("./nosuch.py", "ELTH_PLUGINS: './nosuch.py': no such file")]:
        p = subprocess.run(["elth", "inspect", "x.safetensors"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env={**env, "ELTH_PLUGINS": value})
        assert p.returncode == 2 and p.stderr.startswith(f"elth inspect: error: {says}"), p.stderr
        assert len(p.stderr.splitlines()) == 1
