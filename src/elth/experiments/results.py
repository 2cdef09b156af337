"""The tidy results table: one row per trained ticket, kept as JSON lines and CSV.

Anyone can re-plot an experiment from `results.csv` alone. Columns:

| column | meaning |
|---|---|
| experiment, scale, dataset | which experiment and where it ran |
| target | the network the ticket is for |
| method | dense, imp, ett, magnitude, snip, grasp, synflow, random, reinit, snip-extra, ett-reinit, ett-random, ett-random-reinit, rigl, rigl-5x, dpf |
| source, strategy | ETTs and the transfer baselines: the member the ticket came from and how ("appending", "interpolation 1,2", "appending 1,2,3,4 random", "interval", "drop 1,3", ...) |
| level | the IMP level the ticket corresponds to (0 = dense) |
| sparsity | the ticket's actual sparsity (pruned fraction of all prunable weights) |
| seed | the seed of the IMP run(s) and of training |
| accuracy | test accuracy after training (fraction in [0, 1]) |
| train_steps, train_flops | the ticket's own training (from its rewind point to the end) |
| mask_cost_flops | what finding the mask cost: IMP rewind training and rounds for IMP and ETT tickets, the rewind training and scoring for pruning baselines, 0 for RigL and DPF (their training finds the mask: it is all in train_flops) |
| ticket | the ticket file |
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from elth.errors import ElthError
from elth.files import (
    EXPERIMENT_FILE,
    LMC_JSONL,
    RESULTS_CSV,
    RESULTS_JSONL,
    json_object,
    json_text,
    read_record,
    refuse_json_constant,
    write_text_atomic,
)


@dataclass(frozen=True)
class Row:
    experiment: str
    scale: str
    dataset: str
    target: str
    method: str
    source: str
    strategy: str
    level: int
    sparsity: float
    seed: int
    accuracy: float
    train_steps: int
    train_flops: float
    mask_cost_flops: float
    ticket: str

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.mask_cost_flops


COLUMNS = tuple(f.name for f in fields(Row))
_TYPES = {f.name: f.type for f in fields(Row)}


#: Columns that are fractions in [0, 1].
_FRACTIONS = ("sparsity", "accuracy")


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ElthError(f"{name} = {value!r} is not an integer")
    return int(value)


def _as_float(name: str, value) -> float:
    if isinstance(value, bool):
        raise ElthError(f"{name} = {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ElthError(f"{name} = {value!r} is not a finite number")
    if name in _FRACTIONS and not 0.0 <= number <= 1.0:
        raise ElthError(f"{name} = {value!r} is not a fraction in [0, 1]")
    if number < 0:
        raise ElthError(f"{name} = {value!r} is negative")
    return number


def _as_text(name: str, value) -> str:
    return "" if value is None else str(value)


#: How a column's value is read, by the column's annotated type (`Row`'s annotations are strings).
_READERS = {"int": _as_int, "float": _as_float}


def _coerce(name: str, value) -> object:
    return _READERS.get(_TYPES[name], _as_text)(name, value)


def row_from_dict(d: dict) -> Row:
    missing = [c for c in COLUMNS if c not in d]
    if missing:
        raise ElthError(f"results row lacks the columns {', '.join(missing)}")
    return Row(**{c: _coerce(c, d[c]) for c in COLUMNS})


def sort_key(r: Row) -> tuple:
    order = {"dense": 0, "imp": 1, "ett": 2}
    return (r.target, order.get(r.method, 3), r.method, r.source, r.level, r.seed)


def write_results(rows: list[Row], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `results.jsonl` and `results.csv` (atomically), rows in a stable order."""
    out = Path(out_dir)
    rows = sorted(rows, key=sort_key)
    jsonl = "".join(json_text(asdict(r), sort_keys=False) + "\n" for r in rows)
    p_jsonl = write_text_atomic(out / RESULTS_JSONL, jsonl)

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(v) for k, v in asdict(r).items()})
    p_csv = write_text_atomic(out / RESULTS_CSV, buf.getvalue())
    return p_jsonl, p_csv


def _csv_value(v):
    if isinstance(v, float) and not math.isnan(v):
        return repr(v)
    return v


def read_results(path: str | os.PathLike) -> list[Row]:
    """Rows from a results directory (or a results.jsonl / results.csv file)."""
    p = Path(path)
    if p.is_dir():
        if (p / RESULTS_JSONL).is_file():
            p = p / RESULTS_JSONL
        elif (p / RESULTS_CSV).is_file():
            p = p / RESULTS_CSV
        else:
            raise ElthError(f"{path}: no {RESULTS_JSONL} or {RESULTS_CSV} here (run `elth experiment` first)")
    if not p.is_file():
        raise ElthError(f"{path}: no such results file or directory")
    try:
        if p.suffix == ".csv":
            with open(p, newline="") as f:
                reader = csv.DictReader(f)
                rows = []
                for d in reader:
                    try:
                        rows.append(row_from_dict(d))
                    except (ValueError, TypeError, ElthError) as e:
                        raise ElthError(f"{p}, line {reader.line_num}: unreadable results row ({e})") from None
                return rows
        rows = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(row_from_dict(json.loads(line)))
                except (ValueError, TypeError, ElthError) as e:
                    raise ElthError(f"{p}, line {i}: unreadable results row ({_without_position(e)})") from None
        return rows
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ElthError(f"{p}: unreadable results table ({e})") from None


def _without_position(e: Exception) -> str:
    """A JSON error's message without its 'line 1 column 16 (char 15)' (always line 1 of one line)."""
    return e.msg if isinstance(e, json.JSONDecodeError) else str(e)


def write_lmc(paths: list[dict], out_dir: str | os.PathLike) -> Path:
    """Write `lmc.jsonl`: one interpolation path per line, in a stable order."""
    key = lambda d: (d["target"], d["level"], d["method"] != "imp", d["source"], d["strategy"], d["seed"])
    text = "".join(json_text(d, sort_keys=True) + "\n" for d in sorted(paths, key=key))
    return write_text_atomic(Path(out_dir) / LMC_JSONL, text)


def read_lmc(results_dir: str | os.PathLike) -> list[dict]:
    """The paths of `lmc.jsonl` in an experiment's directory ([] when it measured none)."""
    p = Path(results_dir) / LMC_JSONL
    if not p.is_file():
        return []
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ElthError(f"{p}: unreadable ({e})") from None
    paths = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                path = json.loads(line, parse_constant=refuse_json_constant)
                if not isinstance(path, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise ElthError(f"{p}, line {i}: unreadable path ({_without_position(e)})") from None
            paths.append(path)
    return paths



def read_meta(results_dir: Path) -> dict:
    """experiment.json of a results directory ({} when there is none: a results table on its own)."""
    remedy = "write it again with `elth experiment NAME --report-only` (the same --root and --out)"
    return read_record(results_dir / EXPERIMENT_FILE, json_object, remedy) or {}
