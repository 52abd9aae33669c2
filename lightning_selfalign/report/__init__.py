"""``selfalign report``: report.html and PNG plots of one or more self-align work directories (arms).

Modules: ``collect.py`` reads a work directory (state, settings, each round's files and stats, evaluation),
``training_logs.py`` its CSVLogger loss, ``plots.py`` draws the four pictures (matplotlib, Agg), ``render.py``
fills ``template.html`` and ``command.py`` holds :func:`write_report` and the CLI, :func:`report_command`.
"""

from lightning_selfalign.report.command import report_command, write_report

__all__ = ["report_command", "write_report"]
