"""Curation: executed rows -> SFT rows (filter, select one response per instruction, sanitize, decontaminate,
dedup), with every dropped row counted by step and reason and listed beside the output.

``curate`` is the library function (rows in, :class:`CurationResult` out), ``curate_file`` runs it over files (the
rounds call it too) and ``curate_command`` is ``selfalign curate``. Dedup and decontamination live in
:mod:`lightning_selfalign.dedup` and :mod:`lightning_selfalign.decontamination` so other stages (seed mining) reuse
them.
"""

from lightning_selfalign.curation.command import curate_command, curate_file, read_executed_rows, removed_path
from lightning_selfalign.curation.pipeline import CurationConfig, CurationResult, curate, sft_row

__all__ = [
    "CurationConfig",
    "CurationResult",
    "curate",
    "curate_command",
    "curate_file",
    "read_executed_rows",
    "removed_path",
    "sft_row",
]
