"""How every table minrnn prints shows a number, and how a table is made to fit the console's width.

One format per kind of number, the same in every table (a run's summary, the sweep summary, `minrnn report`,
`minrnn eval`, `minrnn bench`); CSV, JSON and Markdown files keep full precision:

    times and sizes (ms, s, MiB)   3 significant figures, thousands separators   0.0612, 12.5, 125, 1,405
    losses (and bits per char)     4 decimals                                    4.3460
    accuracies                     4 decimals, a fraction as in results.json     0.7701
    D4RL scores and returns        2 decimals                                    77.01
    counts (params, steps, tok/s)  whole, thousands separators                   5,312
    ratios                         2 decimals and x                              1.05x

A table wider than the console is split into several tables, each repeating the key columns (the row's name),
rather than cut: a value is never truncated. A column too wide even alone (free text: an error, a note) wraps.
Piped output is 80 columns wide unless COLUMNS says otherwise (rich's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MISSING = "-"


def time_value(value: float) -> str:
    """A time or a size (the unit is in the column's name): 3 significant figures."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 99.95 else f"{value:.3g}"  # 999.7 -> 1,000, not 1e+03


def loss(value: float) -> str:
    return f"{value:.4f}"


def accuracy(value: float) -> str:
    return f"{value:.4f}"


def score(value: float) -> str:
    return f"{value:.2f}"


def count(value: float) -> str:
    return f"{value:,.0f}" if isinstance(value, float) and math.isfinite(value) else f"{value:,}"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def kind_of(key: str):
    """The format of a value named `key` (a results.json or table key)."""
    if key.endswith(("per_s", "params", "step", "steps")):
        return count
    if key.endswith(("_s", "_ms", "_mib")) or "time" in key:
        return time_value
    if "accuracy" in key:
        return accuracy
    if "loss" in key or "bpc" in key or "bpb" in key:
        return loss
    if "score" in key or "return" in key:
        return score
    if "speedup" in key or "_vs_" in key or key.startswith("x_"):
        return ratio
    return None


def value_text(key: str, value) -> str:
    """`value` as every table shows a value named `key`; "" for None."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    formatter = kind_of(key)
    if formatter:
        return formatter(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"  # a seed, a layer count; another number


@dataclass
class Column:
    header: str
    justify: str = "right"
    key: bool = False  # repeated in every part when the table is split


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def _longest_word(text: str) -> int:
    return max((_cell_width(word) for word in text.split()), default=0)


def _table_width(widths: list[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1  # rich's default box: a border and one space each side


def fitted_tables(title: str, columns: list[Column], rows: list[list[str]], width: int,
                  show_header: bool = True) -> list:
    """rich Tables of `rows` no wider than `width`: as many as it takes, each with the key columns first."""
    from rich.table import Table

    # a header may wrap between its words; a value never wraps (but in a column too wide to fit at all)
    natural = [max([_longest_word(col.header) if show_header else 0, *(_cell_width(row[i]) for row in rows)])
               for i, col in enumerate(columns)]
    keys = [i for i, col in enumerate(columns) if col.key]
    key_widths = [natural[i] for i in keys]
    parts: list[list[int]] = []
    wraps: set[int] = set()  # columns too wide to fit beside the keys: they wrap (fold), nothing is cut
    for i, _ in enumerate(columns):
        if i in keys:
            continue
        if _table_width([*key_widths, natural[i]]) > width:
            wraps.add(i)
            parts.append([i])
            continue
        last = parts[-1] if parts else None
        if last is not None and not wraps.intersection(last) \
                and _table_width([*key_widths, *(natural[j] for j in last), natural[i]]) <= width:
            last.append(i)
        else:
            parts.append([i])
    full = [max(_cell_width(col.header) if show_header else 0, natural[i]) for i, col in enumerate(columns)]
    room = width - _table_width([*key_widths, 0])  # what a wrapping column gets beside the keys
    tables = []
    for number, part in enumerate(parts or [[]]):
        shown = [*keys, *part]
        part_title = title if number == 0 else "(continued)"
        widths = {i: max(room, 1) if i in wraps else natural[i] for i in shown}
        spare = width - _table_width(list(widths.values()))
        for i in shown:  # spare room first unwraps the headers, then keeps the title on one line
            widths[i] += max(0, min(spare, full[i] - widths[i]))
            spare = width - _table_width(list(widths.values()))
        short_of_title = min(_cell_width(part_title), width) - _table_width(list(widths.values()))
        widths[shown[-1]] += max(0, short_of_title)
        table = Table(title=part_title, show_header=show_header)
        for i in shown:
            column = columns[i]
            table.add_column(column.header, justify=column.justify, overflow="fold", width=widths[i])
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        tables.append(table)
    return tables


def print_fitted(console, title: str, columns: list[Column], rows: list[list[str]],
                 show_header: bool = True) -> None:
    for table in fitted_tables(title, columns, rows, console.width, show_header):
        console.print(table)
