"""Run many `elth` command lines, each in its own process, for the price of one torch import.

Reads a JSON list of {"argv": [...], "cwd": DIR} on stdin and writes a JSON list of
{"code", "stdout", "stderr", "seconds"} on stdout, in the same order. The parent imports `elth.cli` once
and forks a child per command line; the child gets its own working directory, its own file
descriptors 1 and 2 (files, so anything written to them is caught, from Python or not) and exits
with what the `elth` console script would (`sys.exit(main(argv))`). Up to JOBS children run at once.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

JOBS = 2


def _child(argv: list[str], cwd: str, out_path: str, err_path: str) -> None:
    code = 1
    try:
        os.chdir(cwd)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        from elth.cli import main

        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported through stderr like the console script would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


#: Modules the subcommands import when they run, imported once in the parent (the point of forking).
PRELOAD = ("elth.data", "elth.models", "elth.tickets", "elth.training", "elth.elastic", "elth.workflows",
           "elth.analysis", "elth.experiments.runner", "elth.experiments.report")


def run_all(cases: list[dict]) -> list[dict]:
    import importlib

    import elth.cli

    for command in elth.cli.COMMANDS:
        elth.cli.build_parser(command)  # imports the subcommand's module
    for name in PRELOAD:
        importlib.import_module(name)

    results: list[dict | None] = [None] * len(cases)
    running: dict[int, tuple[int, str, str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="elth-cli-runner-") as scratch:
        queue = list(enumerate(cases))

        def reap() -> None:
            pid, status = os.wait()
            i, out_path, err_path, start = running.pop(pid)
            with open(out_path) as o, open(err_path) as e:
                results[i] = {"code": os.waitstatus_to_exitcode(status), "stdout": o.read(), "stderr": e.read(),
                              "seconds": time.perf_counter() - start}

        while queue or running:
            while queue and len(running) < JOBS:
                i, case = queue.pop(0)
                out_path, err_path = os.path.join(scratch, f"{i}.out"), os.path.join(scratch, f"{i}.err")
                pid = os.fork()
                if pid == 0:
                    _child(case["argv"], case["cwd"], out_path, err_path)
                running[pid] = (i, out_path, err_path, time.perf_counter())
            reap()
    return results  # type: ignore[return-value]


if __name__ == "__main__":
    json.dump(run_all(json.load(sys.stdin)), sys.stdout)
