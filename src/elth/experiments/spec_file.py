"""Experiments of one's own, as TOML files: `elth experiment my_spec.toml`.

A file holds what a shipped experiment holds (`spec.Experiment`, its `Setup`s per scale, their
`Transfer`s) and the claims its runs are judged on (`verdicts.Claim`, each naming a measure of
`verdicts.MEASURE_KINDS`):

    name = "my_family"
    title = "MLPs of my own, stretched and squeezed"
    plugins = ["my_models"]                # modules or .py files that register families/datasets

    [[scales.cpu]]                         # one table per part (dataset) of the scale
    dataset = "digits"
    members = ["mlp_2", "mlp_3"]
    levels = [2, 4]
    preset = "short"
    protocol = { length = "300it", milestones = ["200it"] }
    rewind = "10it"
    seeds = 3
    baselines = ["snip", "random"]
    # transfers = "all" (the default), or tables:
    # [[scales.cpu.transfers]]
    # source = "mlp_2"
    # target = "mlp_3"

    [[claims]]
    where = "Sec. 4"
    statement = "ETT tickets are on par with IMP"
    measure = "ett_vs_imp"                 # see `elth experiment --measures`
    margin = 0.5                           # points of accuracy (of error for LMC instability)

`load_experiment_file` reads and checks a file (every error names the file and the key path, with
the closest allowed key or value); `experiment_toml` writes any experiment as such a file
(`elth experiment --show NAME`), and reading it back gives the same runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path

import tomllib

from elth import plugins
from elth.experiments.spec import (
    ALL_PAIRS,
    SCALES,
    Experiment,
    Setup,
    SpecError,
    Transfer,
)
from elth.experiments.verdicts import (
    MEASURE_KINDS,
    Claim,
    NamedMeasure,
    claims_of,
    register_claims,
)
from elth.models import parse_model_name

#: Accuracy points per unit of a claim's margin in files (margins are fractions inside elth).
POINTS = 100.0

_TOP = {"name": str, "title": str, "paper": str, "description": str, "plugins": list, "scales": dict, "claims": list}
_CLAIM = {"where": str, "statement": str, "effect": str, "measure": str, "margin": (int, float), "params": dict}
#: Setup fields as a file spells them: name -> the TOML types it takes
_SETUP_TYPES = {
    "dataset": str, "members": list, "levels": list, "preset": str, "protocol": dict, "rewind": str,
    "prune_fraction": (int, float), "imp_beyond": int, "sources": list, "transfers": (str, list), "order": str,
    "squeeze_mode": str, "baselines": list, "baseline_targets": list, "baseline_levels": list, "seeds": int,
    "lmc_levels": list, "lmc_points": int, "match_sparsity": bool, "note": str,
}
_TRANSFER_TYPES = {"source": str, "target": str, "order": str, "squeeze_mode": str, "units": list, "drop": list,
                   "random_replicas": bool, "source_dataset": str, "width_squeeze": str, "rescale": bool}
_REQUIRED_SETUP = ("dataset", "members", "levels")
_TUPLES = ("members", "levels", "sources", "baselines", "baseline_targets", "baseline_levels", "lmc_levels",
           "units", "drop")


class SpecFileError(SpecError):
    """A spec file that cannot be run: one line naming the file, the key path and what is allowed."""


def is_spec_file(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name or "/" in name


# -- reading ------------------------------------------------------------------------------------
def load_experiment_file(path: str | os.PathLike, shipped: bool = False) -> Experiment:
    """The experiment a TOML file describes, checked whole before anything runs; its claims are
    registered (so its report judges them). A user's file is recorded as the experiment's `source`
    (its report finds the claims there again); a `shipped` one is found by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecFileError(f"{path}: not valid TOML: {e}") from None
    at = _Where(path)
    _check_keys(at, data, _TOP)
    for key in ("name", "title"):
        if key not in data:
            raise at.error(key, "missing (every spec file names its experiment and gives it a title)")
    name = data["name"]
    if not name or not all(c.isalnum() or c in "_-" for c in name) or not name.isascii():
        raise at.error("name", f"{name!r}: letters, digits, '_' and '-' only")
    _load_plugins(at, data.get("plugins", []), path.parent)
    scales = data.get("scales", {})
    if not scales:
        raise at.error("scales", f"no scale: give at least one, as [[scales.<scale>]] with <scale> one of {', '.join(SCALES)}")
    parsed = []
    for scale, parts in scales.items():
        if scale not in SCALES:
            raise at.error(f"scales.{scale}", f"unknown scale{_closest(scale, SCALES)}; the scales: {', '.join(SCALES)}")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise at.error(f"scales.{scale}", "expected tables, written [[scales.%s]]" % scale)
        parsed.append((scale, tuple(_setup(at, f"scales.{scale}[{i}]", part) for i, part in enumerate(parts))))
    experiment = Experiment(name=name, title=data["title"], paper=data.get("paper", ""),
                            description=data.get("description", ""), scales=tuple(parsed),
                            source="" if shipped else str(path.resolve()))
    claims = [_claim(at, f"claims[{i}]", c, experiment) for i, c in enumerate(data.get("claims", []))]
    register_claims(claims, experiment.name)
    return experiment


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, message: str) -> SpecFileError:
        return SpecFileError(f"{self.path}: {key}: {message}")


def _closest(word: str, allowed) -> str:
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "an array",
             dict: "a table"}
    return " or ".join(words[t] for t in types)


def _check_keys(at: _Where, table: dict, allowed: dict, prefix: str = "") -> None:
    for key, value in table.items():
        where = f"{prefix}{key}"
        if key not in allowed:
            raise at.error(where, f"unknown key{_closest(key, allowed)}; the keys here: {', '.join(allowed)}")
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if isinstance(value, bool) and bool not in types:
            raise at.error(where, f"{value!r} is not {_type_name(types)}")
        if not isinstance(value, types):
            raise at.error(where, f"{_show(value)} is not {_type_name(types)}")


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)


def _load_plugins(at: _Where, entries: list, base: Path) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise at.error(f"plugins[{i}]", "expected a module name or a .py file")
        if entry.endswith(".py") and not os.path.isabs(entry):
            entry = str(base / entry)  # relative to the spec file
        try:
            plugins.load_entry(entry, source=f"{at.path}: plugins[{i}]")
        except plugins.PluginError as e:
            raise SpecFileError(str(e)) from None


def _members(at: _Where, where: str, names) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise at.error(f"{where}[{i}]", f"{_show(name)} is not a model name")
        try:
            parse_model_name(name)
        except Exception as e:
            raise at.error(f"{where}[{i}]", str(e)) from None
        out.append(name)
    return tuple(out)


def _ints(at: _Where, where: str, values) -> tuple[int, ...]:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise at.error(f"{where}[{i}]", f"{_show(v)} is not an integer")
    return tuple(values)


def _strings(at: _Where, where: str, values) -> tuple[str, ...]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise at.error(f"{where}[{i}]", f"{_show(v)} is not a string")
    return tuple(values)


def _setup(at: _Where, where: str, table: dict) -> Setup:
    _check_keys(at, table, _SETUP_TYPES, f"{where}.")
    for key in _REQUIRED_SETUP:
        if key not in table:
            raise at.error(f"{where}.{key}", "missing")
    kw = dict(table)
    kw["members"] = _members(at, f"{where}.members", kw["members"])
    if "sources" in kw:
        kw["sources"] = _members(at, f"{where}.sources", kw["sources"])
    for key in ("levels", "baseline_levels", "lmc_levels"):
        if key in kw:
            kw[key] = _ints(at, f"{where}.{key}", kw[key])
    for key in ("baselines", "baseline_targets"):
        if key in kw:
            kw[key] = _strings(at, f"{where}.{key}", kw[key])
    if "protocol" in kw:
        kw["protocol"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kw["protocol"].items())
    if isinstance(kw.get("transfers"), str):
        if kw["transfers"] != ALL_PAIRS:
            raise at.error(f"{where}.transfers", f"{kw['transfers']!r}: {ALL_PAIRS!r} or [[...transfers]] tables")
    elif "transfers" in kw:
        kw["transfers"] = tuple(_transfer(at, f"{where}.transfers[{i}]", t) for i, t in enumerate(kw["transfers"]))
    setup = Setup(**kw)
    for i, t in enumerate(setup.expand_transfers()):
        source, target = parse_model_name(t.source), parse_model_name(t.target)
        if source.kind != target.kind:
            key = f"{where}.transfers" + ("" if isinstance(setup.transfers, str) else f"[{i}]")
            raise at.error(key, f"{t.source} -> {t.target} crosses families ({source.kind} and {target.kind}); "
                                "a transfer stays in one family" + (" (transfers = \"all\" pairs every member "
                                "with every other: give the pairs)" if isinstance(setup.transfers, str) else ""))
    try:
        setup.validate()
    except SpecError as e:
        raise at.error(where, str(e)) from None
    return setup


def _transfer(at: _Where, where: str, table) -> Transfer:
    if not isinstance(table, dict):
        raise at.error(where, "expected a table with source and target")
    _check_keys(at, table, _TRANSFER_TYPES, f"{where}.")
    for key in ("source", "target"):
        if key not in table:
            raise at.error(f"{where}.{key}", "missing")
    kw = dict(table)
    for key in ("units", "drop"):
        if key in kw:
            kw[key] = _ints(at, f"{where}.{key}", kw[key])
    return Transfer(**kw)


def _claim(at: _Where, where: str, table, experiment: Experiment) -> Claim:
    if not isinstance(table, dict):
        raise at.error(where, "expected a table ([[claims]])")
    _check_keys(at, table, _CLAIM, f"{where}.")
    for key in ("statement", "measure"):
        if key not in table:
            raise at.error(f"{where}.{key}", "missing")
    kind = MEASURE_KINDS.get(table["measure"])
    if kind is None:
        raise at.error(f"{where}.measure", f"unknown measure {table['measure']!r}{_closest(table['measure'], MEASURE_KINDS)}; "
                                           f"the measures: {', '.join(MEASURE_KINDS)} (elth experiment --measures)")
    params = table.get("params", {})
    for key, value in params.items():
        if key not in kind.params:
            allowed = ", ".join(kind.params) or "none"
            raise at.error(f"{where}.params.{key}", f"{kind.name} has no parameter {key!r}{_closest(key, kind.params)} "
                                                   f"(its parameters: {allowed})")
        if isinstance(value, bool) or not isinstance(value, kind.params[key][0]):
            raise at.error(f"{where}.params.{key}", f"{_show(value)} is not {_type_name(kind.params[key][0])}")
    if kind.needs is not None:
        makes, what = kind.needs
        if not any(makes(setups) for _, setups in experiment.scales):
            raise at.error(f"{where}.measure", f"{kind.name} needs {what}, which no scale of the experiment makes")
    margin = table.get("margin", 0.0)
    if margin < 0:
        raise at.error(f"{where}.margin", f"{margin!r}: a margin is the shortfall a claim allows, >= 0 points")
    return Claim(experiment.name, table.get("where", ""), table["statement"], table.get("effect", kind.doc),
                 margin / POINTS, NamedMeasure(kind.name, tuple(sorted(params.items()))))


# -- writing ------------------------------------------------------------------------------------
def experiment_toml(experiment: Experiment) -> str:
    """`experiment` (and its claims) as a spec file that `load_experiment_file` reads back to the same runs."""
    lines = [f"name = {_toml(experiment.name)}", f"title = {_toml(experiment.title)}"]
    for key in ("paper", "description"):
        if getattr(experiment, key):
            lines.append(f"{key} = {_toml(getattr(experiment, key))}")
    defaults = Setup(dataset="", members=(), levels=())
    for scale, setups in experiment.scales:
        for setup in setups:
            lines += ["", f"[[scales.{scale}]]"]
            transfers = None
            for f in dataclasses.fields(Setup):
                value = getattr(setup, f.name)
                if f.name in _REQUIRED_SETUP or value != getattr(defaults, f.name):
                    if f.name == "transfers" and not isinstance(value, str):
                        transfers = value
                        continue
                    if f.name == "protocol":
                        value = dict(value)
                    lines.append(f"{f.name} = {_toml(value)}")
            for t in transfers or ():
                lines += ["", f"[[scales.{scale}.transfers]]"]
                tdefault = Transfer(t.source, t.target)
                for f in dataclasses.fields(Transfer):
                    value = getattr(t, f.name)
                    if f.name in ("source", "target") or value != getattr(tdefault, f.name):
                        lines.append(f"{f.name} = {_toml(value)}")
    for c in claims_of(experiment.name):
        lines += ["", "[[claims]]", f"where = {_toml(c.where)}", f"statement = {_toml(c.statement)}",
                  f"effect = {_toml(c.effect)}", f"measure = {_toml(c.measure.name)}",
                  f"margin = {_toml(round(c.margin * POINTS, 6))}"]
        if c.measure.params:
            lines.append(f"params = {_toml(dict(c.measure.params))}")
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    """A TOML value (strings as JSON strings, which TOML reads alike for the characters they use)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def measures_text() -> str:
    """The measures a claim may name, with their parameters and what they need."""
    out = []
    for k in MEASURE_KINDS.values():
        params = "; params: " + ", ".join(f"{p} ({what})" for p, (_, what) in k.params.items()) if k.params else ""
        needs = f"; needs {k.needs[1]}" if k.needs else ""
        out.append(f"  {k.name:<28} {k.doc}{params}{needs}")
    return "\n".join(out)
