"""Lone runs' results pinned byte for byte: the tickets `elth imp` and `elth dst` write on digits.

A change to the training code that is meant to keep results (a refactor, a new code path for the
same run) must keep these files identical. The runs train in a fresh process whose kernels do not
depend on the CPU (`ATEN_CPU_CAPABILITY=default`: ATen's scalar kernels; `MKL_CBWR=COMPATIBLE`:
MKL's reproducible code path; one thread), so the same bytes come out on every x86 CPU. A change
that is meant to change results (a new protocol default, another initialisation) updates PINNED:
`python tests/test_pinned_results.py` prints the new table.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

RUNS = (
    "imp --model mlp_2 --dataset digits --levels 2 --rewind 5it --length 60it --milestones 40it --seed 3",
    "dst --method rigl --model mlp_2 --dataset digits --sparsity 0.8 --length 60it --update-every 10 --seed 3",
    "dst --method dpf --model mlp_2 --dataset digits --sparsity 0.8 --length 60it --update-every 10 --seed 3",
)

#: Kernels that give the same bits on every x86 CPU.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1"}

PINNED = {
    "dst-72195b29b1fe/ticket.safetensors": "13ad655ed1fd4afe370db571cc1443869cc972273b99c403f3b5b2fb40f12498",
    "dst-dd5fa1a55a08/ticket.safetensors": "592d6efd17a94645959c8a85aa5ee486809862a5a5d0d422bc0cb679b0f2b540",
    "imp-c14494891d11/level_0/ticket.safetensors": "340f9159b837c5790ebc828b881df3a1752e54a740cea5af4647991b13526adc",
    "imp-c14494891d11/level_1/ticket.safetensors": "8095cfbea3832fad636dcafa2e3777f1d567967a4f753004a62c279b106cc498",
    "imp-c14494891d11/level_2/ticket.safetensors": "1a33be063c307d40828cf35e0b69ea555c17f6c66ea63633d2d3fe2b25180b17",
    "rewind-5b8c1dd0e9d7/rewind.safetensors": "84fe1dc124c843452c1e47a424f33902157d0491220f278168309cfe2e9d7054",
}

_SCRIPT = """
import sys
from elth.cli import main
root = sys.argv[1]
for run in sys.argv[2:]:
    code = main(run.split() + ["--root", root, "--no-progress"])
    if code:
        sys.exit(code)
"""


def ticket_hashes(root: Path) -> dict[str, str]:
    """sha256 of every ticket file the RUNS write under `root`, trained with PORTABLE_KERNELS."""
    env = {**os.environ, **PORTABLE_KERNELS}
    subprocess.run([sys.executable, "-c", _SCRIPT, str(root), *RUNS], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.safetensors"))}


def test_lone_imp_and_dst_tickets_are_pinned_byte_for_byte(tmp_path):
    assert ticket_hashes(tmp_path / "runs") == PINNED


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, digest in ticket_hashes(Path(d)).items():
            print(f'    "{name}": "{digest}",')
