"""The report's console tables fitted to the console's width: per-class IoU and the like in a table of their own if need be."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from segsweep.runs.overrides import shown_value
from segsweep.sweep.groups import Group, Report
from segsweep.sweep.search import shown_label

Column = tuple[str, Callable[[Group], str]]  # (header, the cell of a group)


def _longest(text: str, by: str | None = None) -> int:
    """The longest line of ``text`` (``by=None``: its longest word, below which a number or word would be cut)."""
    return max((len(part) for part in (text.split() if by is None else text.splitlines())), default=0)


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]], label: int, width: int) -> tuple[list[int], bool]:
    """Each column's width, and whether the table fits ``width`` without wrapping: every column at least its longest
    word (column ``label``, the group or class names, at least 8 and at most what the others leave), then the room
    left handed out in column order up to each column's longest line."""
    columns = list(zip(headers, *rows))
    natural = [max([_longest(header), *(_longest(cell, "\n") for cell in cells)]) for header, *cells in columns]
    words = [max([_longest(header), *(_longest(cell) for cell in cells)]) for header, *cells in columns]
    room = width - 2 * len(headers)  # two spaces between columns, one at either edge (the box's)
    if sum(natural) <= room:
        return natural, True
    widths = list(words)
    widths[label] = min(natural[label], max(8, room - sum(words) + words[label]))
    left = room - sum(widths)
    for index, wanted in enumerate(natural):
        grow = max(0, min(wanted - widths[index], left))
        widths[index], left = widths[index] + grow, left - grow
    return widths, False


def _table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], styles: Sequence[str | None], label: int, width: int
) -> tuple[Table, bool]:
    """The table at `_widths` (headers one word a line), and whether it fits unwrapped; cells fold only if the
    console is narrower than their longest words."""
    lines = [header.replace(" ", "\n") for header in headers]
    widths, fits = _widths(lines, rows, label, width)
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for index, (header, column_width) in enumerate(zip(lines, widths)):
        table.add_column(header, justify="left" if index == label else "right", width=column_width, overflow="fold")
    for row, style in zip(rows, styles):
        table.add_row(*row, style=style)
    return table, fits


def fitted_tables(
    report: Report, columns: Sequence[Column], details: Sequence[Column], best: Sequence[bool], console: Console
) -> list[Table]:
    """The comparison (``columns`` after the group label, ``details`` after the first three of them) as one
    table if it fits the console; else without the details, the group labels folded as far as it takes
    (one override a line, then keys shortened), and the details in tables of their own (`detail_tables`)."""
    title = f"Sweep {report.sweep_dir}: test metrics (IoU per class), epochs counted from 1, wall time"
    ranks = ["best" if is_best else str(rank) for rank, is_best in enumerate(best, start=1)]
    styles = ["bold green" if is_best else None for is_best in best]

    def table(chosen: Sequence[Column], fold: int, text: str) -> tuple[Table, bool]:
        """``fold``: 0 the label on one line, 1 one override a line, 2 also the keys shortened (`short_keys`)."""
        keys = short_keys(report.groups) if fold == 2 else {}
        rows = [
            [ranks[index], _label(group, fold, keys), *(str(cell(group)) for _, cell in chosen)]
            for index, group in enumerate(report.groups)
        ]
        shortened = {short: key for key, short in keys.items() if short != key}
        caption = "keys: " + ", ".join(f"{short} = {key}" for short, key in shortened.items()) if shortened else None
        headers = ["rank", "group", *(header for header, _ in chosen)]
        made, fits = _table(text, headers, rows, styles, label=1, width=console.width)
        made.caption = caption
        return made, fits

    single, fits = table([*columns[:3], *details, *columns[3:]], 0, title)
    if fits:
        return [single]
    title = title.replace(" (IoU per class)", "")
    for fold in (0, 1, 2):
        main, fits = table(columns, fold, title)
        if fits:
            break
    return [main, *detail_tables(report.groups, details, ranks, console)]


def short_keys(groups: Sequence[Group]) -> dict[str, str]:
    """Each swept key as its last dotted part (``optimizer.lr``: ``lr``), where no other key ends the same."""
    keys = list(dict.fromkeys(key for group in groups for key in group.params))
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _label(group: Group, fold: int, keys: dict[str, str]) -> str:
    if fold < 2:
        return shown_label(group, ",\n" if fold else ",")
    return ",\n".join(f"{keys.get(key, key)}={shown_value(value)}" for key, value in group.params.items()) or group.label


def detail_tables(groups: Sequence[Group], details: Sequence[Column], ranks: Sequence[str], console: Console) -> list[Table]:
    """The ``details`` (test IoU per class, ...): a row each, a column per group headed by its rank in the comparison; as many
    tables as it takes for the groups' columns to fit the console."""
    names = [header for header, _ in details]
    cells = [[str(cell(group)) for group in groups] for _, cell in details]
    cell_width = max([len(rank) for rank in ranks] + [_longest(cell) for row in cells for cell in row])
    per_table = max(1, (console.width - max(map(len, names)) - 2) // (cell_width + 2))  # as `_widths` counts the room
    tables = []
    for start in range(0, len(groups), per_table):
        chosen = range(start, min(start + per_table, len(groups)))
        part = f" {chosen[0] + 1} to {chosen[-1] + 1}" if per_table < len(groups) else ""
        title = f"Test IoU per class, pixel acc, boundary F1 (columns: the groups{part} by rank)"
        rows = [[name, *(row[index] for index in chosen)] for name, row in zip(names, cells)]
        headers = ["test", *(ranks[index] for index in chosen)]
        tables.append(_table(title, headers, rows, [None] * len(rows), label=0, width=console.width)[0])
    return tables
