"""open_lth, the framework the paper's code builds on: its lottery runs read as elth tickets
(`reading`), and elth tickets written as its lottery runs (`writing`)."""
from elth.open_lth.reading import (
    BRANCH_PREFIX,
    Level,
    OpenLTHError,
    Run,
    branch_ticket,
    convert_state,
    find_levels,
    import_branches,
    import_run,
    level_ticket,
    model_of,
    read_hparams,
    read_run,
)

__all__ = [
    "BRANCH_PREFIX", "Level", "OpenLTHError", "Run", "branch_ticket", "convert_state", "find_levels",
    "import_branches", "import_run", "level_ticket", "model_of", "read_hparams", "read_run",
]
