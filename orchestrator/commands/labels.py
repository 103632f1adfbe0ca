"""Teacher labels as their own cached, resumable command (the sweep runs the same code on its folder).

    python -m orchestrator labels setting=wronglang_spanish [hydra overrides]
    python -m orchestrator labels setting=my_setting hydra.run.dir=/abs/sweep_dir   # into a sweep folder

Without hydra.run.dir the labels land in `<cache_dir>/labels/<setting>/<key>/` (labels.jsonl +
labels.meta.json), where the key hashes everything that made them; a later sweep with the same inputs
copies them from there instead of labelling again. With hydra.run.dir=DIR they land in DIR, which a
sweep started with the same hydra.run.dir then uses as they are. Running the command again costs
nothing: finished labels are reused, and an endpoint teacher's completions are cached one by one, so
an interrupted run resumes where it stopped. Before anything runs, the teacher is checked: its
endpoint (key set, server up, model served), or its label file (every bad line reported).
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.console.sweep_log import say as log
from orchestrator.run.labels import make_labels


def split_args(argv: list[str]) -> tuple[list[str], Path | None]:
    """(Hydra overrides, the output folder from hydra.run.dir=DIR if given)."""
    overrides, out = [], None
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            out = Path(arg.split("=", 1)[1]).expanduser().resolve()
        else:
            overrides.append(arg)
    return overrides, out


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from orchestrator.config import compose_config

    overrides, out = split_args(argv)
    cfg = compose_config(overrides)
    from orchestrator.plan.preflight import check_labels

    check_labels(cfg)
    path = make_labels(cfg, out)  # user errors: exit 2 in orchestrator/__main__.py
    log(f"[labels] ready: {path}")
    return 0
