"""The report's evidence: paired differences over seeds per ETT ticket, the verdict on each claim of
the paper an experiment tests, and the paper-wide verdict table of a folder of reports."""
from __future__ import annotations

from pathlib import Path

from elth.analysis.stats import WITHIN_NOISE, format_difference
from elth.experiments.markdown import table as _table
from elth.experiments.paired import (
    PairedComparison,
    ett_comparisons,
    ett_vs_every_baseline,
)
from elth.experiments.results import Row, read_lmc, read_meta, read_results
from elth.experiments.verdicts import (
    RULE,
    VERDICT_HEADER,
    all_claims,
    verdict_rows,
    verdicts_for,
)
from elth.files import EXPERIMENT_FILE, REPORT_FILE, write_text_atomic
from elth.methods import DEFAULT_STRATEGIES, short_name

INDEX = "README.md"


def _ett_cell(c: PairedComparison) -> str:
    return short_name(c.key[1]) + (f" ({c.key[2]})" if c.key[2] not in DEFAULT_STRATEGIES else "")


def _diff(c: PairedComparison | None) -> str:
    if c is None:
        return "n/a"
    return ("≈" if c.extrapolated and c.difference is not None else "") + format_difference(c.difference)


def paired_section(rows: list[Row]) -> str:
    """ETT − IMP and ETT − the best baseline per ETT ticket, seed by seed, with 95% intervals."""
    pairs = ett_comparisons(rows)
    if not pairs:
        return ""
    body = []
    for imp, base in pairs:
        n = imp.difference.interval.n if imp.difference is not None else 0
        body.append([short_name(imp.target), _ett_cell(imp), str(imp.level), f"{100 * imp.sparsity:.2f}%", str(n),
                     _diff(imp), base.against_label if base else "n/a", _diff(base)])
    text = ("## Paired differences over seeds\n\n"
            "Each seed's ETT ticket minus IMP (or a baseline) of the same seed, read at that ticket's own "
            "sparsity; seeds pair the runs that share an IMP run, and runs of different seeds are never paired. "
            "Mean over seeds in points, with its 95% t-interval over seeds in brackets; "
            f"{WITHIN_NOISE}: the interval contains 0 (the difference is within seed noise); ≈: some seed's "
            "reading lies just beyond the other curve's end.\n\n")
    text += _table(["target", "ETT from", "level", "ETT sparsity", "seeds", "ETT − IMP", "best baseline",
                    "ETT − baseline"], body)
    every = [c for c in ett_vs_every_baseline(rows) if c.difference is not None]
    if every:
        text += "\nETT against every baseline that can be read at its sparsity (same reading):\n\n"
        text += _table(["target", "ETT from", "level", "baseline", "ETT − baseline"],
                       [[short_name(c.target), _ett_cell(c), str(c.level), c.against_label, _diff(c)] for c in every])
    return text


def verdict_section(experiment: str, rows: list[Row], lmc: list[dict]) -> str:
    verdicts = verdicts_for(experiment, rows, lmc)
    if not verdicts:
        return ""
    return ("## Verdicts on its claims at this scale\n\n" + RULE + "\n\n"
            + _table(VERDICT_HEADER, verdict_rows(verdicts)))


def experiment_dirs(root: str | Path) -> list[Path]:
    """The experiment output directories in `root` (those with an experiment.json), sorted."""
    return sorted(p for p in Path(root).iterdir() if (p / EXPERIMENT_FILE).is_file())


def write_verdict_index(results_root: str | Path, title: str = "Results made with elth",
                        preamble: str = "") -> Path:
    """`README.md` of a folder of experiment reports: every claim's verdict, each row linked to its
    report, then the list of reports."""
    root = Path(results_root)
    ranked, listing = [], []
    for d in experiment_dirs(root):
        meta = read_meta(d)
        results = read_results(d)
        seeds = len({r.seed for r in results})
        link = f"[{d.name}]({d.name}/{REPORT_FILE})"
        verdicts = verdicts_for(meta.get("name", ""), results, read_lmc(d))
        order = all_claims()
        ranked += [(order.index(v.claim), d.name, row) for v, row in zip(verdicts, verdict_rows(verdicts, link))]
        protocols = sorted(set(meta.get("protocols", {}).values()))
        listing.append([link, meta.get("paper", ""), str(seeds), "; ".join(protocols) or "n/a",
                        _minutes(meta),
                        f"`{meta.get('command', '')}`"])
    text = [f"# {title}\n"]
    if preamble:
        text.append(preamble.strip() + "\n")
    text.append("## Verdicts on the claims\n\n" + RULE + "\n")
    text.append(_table(VERDICT_HEADER + ["report"], [row for *_, row in sorted(ranked)]))
    text.append("## Reports\n")
    text.append("The protocol each report was run with (its training of every ticket), its seeds and its wall "
                "time (the time while any of its runs trained, over every invocation and worker, where the "
                "report records it; else its one invocation's); a report run before its spec changed keeps "
                "its own protocol.\n")
    text.append(_table(["report", "the paper's", "seeds", "protocol", "wall time", "command"], listing))
    return write_text_atomic(root / INDEX, "\n".join(text))


def _minutes(meta: dict) -> str:
    seconds = meta.get("busy_seconds") or meta.get("wall_seconds")
    return f"{seconds / 60:.0f} min" if seconds is not None else "n/a"


def _in_words(c: PairedComparison | None, name: str) -> str:
    if c is None or c.difference is None:
        return f"vs {name}: n/a"
    iv = c.difference.interval
    approx = "~" if c.extrapolated else ""
    text = f"vs {name} {approx}{100 * iv.mean:+.2f}"
    if iv.low is None:
        return text + " points (one seed: no interval, so it cannot be told from seed noise)"
    text += f" [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}] points"
    if iv.contains_zero:
        return text + ": within seed noise"
    return text + (": ETT better" if iv.low > 0 else ": ETT worse")


def plain_summary(rows: list[Row]) -> list[str]:
    """One line per ETT ticket: its difference from IMP and from the best baseline, paired over seeds
    with 95% intervals, and in words whether it stands out of seed noise."""
    lines = []
    for imp, base in ett_comparisons(rows):
        n = imp.difference.interval.n if imp.difference is not None else 0
        lines.append(f"  {short_name(imp.target)} <- {_ett_cell(imp)} at {100 * imp.sparsity:.1f}% sparsity "
                     f"({n} seed{'s' if n != 1 else ''}): {_in_words(imp, 'IMP')}; "
                     + _in_words(base, f"best baseline ({base.against_label})" if base else "best baseline"))
    return lines
