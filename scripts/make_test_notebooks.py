"""Write the stand-in notebooks of tests/notebooks/ (the ``notebooks_dir`` fixture).

The real notebooks in ../shared/notebooks are CC-BY-NC-ND text: the project may read them
(benchmarks do) but not copy them. These stand-ins have the shapes the tests rely on (cell
counts and kinds, output types, sizes) with our own text, and are written exactly as Jupyter
writes files: nbformat 4.4 without cell ids, ``nbformat.writes`` plus a newline.

Deterministic: the code cells are run here, in order, in one namespace (a tiny kernel: stdout
becomes a stream output, a final expression an execute_result), and every image is seeded
noise. Run it again after changing it and commit the files:

    .venv/bin/python scripts/make_test_notebooks.py           # (re)write tests/notebooks/
    .venv/bin/python scripts/make_test_notebooks.py --check   # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import html
import io
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.nbgen import (
    Cell,
    Notebook,
    Output,
    code_cell,
    dump,
    execute_result,
    markdown_cell,
    nbformat_node,
    nbformat_writes,
    notebook,
    stream,
    tiny_png,
)

OUT = Path(__file__).resolve().parents[1] / "tests" / "notebooks"
FOLDED = {"collapsed": False, "jupyter": {"outputs_hidden": False}}  # JupyterLab's view state
FIGURE = "<Figure size 432x288 with 1 Axes>"
METADATA: Notebook = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.4",
    },
}


@dataclass(frozen=True)
class Plot:
    """A code cell that showed a figure: not run, its output a seeded noise PNG."""

    source: str
    side: int


@dataclass(frozen=True)
class Table:
    """A code cell whose final expression, a list of row dicts, shows as an HTML table."""

    source: str


@dataclass(frozen=True)
class Figure:
    """A markdown cell with a pasted image (an attachment)."""

    source: str
    side: int


class Md(str):
    """A markdown cell's source (a plain str is a code cell's)."""


Item = str | Md | Plot | Table | Figure


class Kernel:
    """Runs code cells in one namespace, as a Jupyter kernel would, for their outputs."""

    def __init__(self, seed: int) -> None:
        self.namespace: dict[str, Any] = {}
        self.count = 0
        self.rng = random.Random(seed)

    def run(self, source: str) -> tuple[list[Output], Any]:
        self.count += 1
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(tree, "<cell>", "exec"), self.namespace)
            value = (
                eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.namespace)
                if last
                else None
            )
        outputs = [stream(printed.getvalue())] if printed.getvalue() else []
        return outputs, value

    def cell(self, item: Item) -> Cell:
        if isinstance(item, Figure):
            cell = markdown_cell(item.source)
            png = tiny_png(item.side, item.side, self.rng).strip()
            cell["attachments"] = {"figure.png": {"image/png": png}}
            return cell
        if isinstance(item, Md):
            return markdown_cell(str(item))
        if isinstance(item, Plot):
            self.count += 1
            image = {"image/png": tiny_png(item.side, item.side, self.rng), "text/plain": FIGURE}
            output = {"data": image, "metadata": {}, "output_type": "display_data"}
            return code_cell(item.source, [output], execution_count=self.count, metadata=FOLDED)
        source = item.source if isinstance(item, Table) else item
        outputs, value = self.run(source)
        if isinstance(item, Table):
            result = execute_result(plain_table(value), self.count)
            result["data"]["text/html"] = html_table(value)
            outputs.append(result)
        elif value is not None:
            outputs.append(execute_result(repr(value), self.count))
        metadata = {"tags": []} if not outputs else FOLDED
        return code_cell(source, outputs, execution_count=self.count, metadata=metadata)


def plain_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    width = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
    lines = ["  ".join(c.rjust(width[c]) for c in columns)]
    lines += ["  ".join(str(row[c]).rjust(width[c]) for c in columns) for row in rows]
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "    <tr>\n"
        + "".join(f"      <td>{html.escape(str(v))}</td>\n" for v in row.values())
        + "    </tr>\n"
        for row in rows
    )
    return (
        '<div>\n<table border="1" class="dataframe">\n  <thead>\n'
        f'    <tr style="text-align: right;">{head}</tr>\n  </thead>\n  <tbody>\n'
        f"{body}  </tbody>\n</table>\n</div>"
    )


def build(items: Iterable[Item], seed: int) -> str:
    kernel = Kernel(seed)
    text = dump(notebook([kernel.cell(item) for item in items], minor=4, metadata=METADATA))
    assert nbformat_writes(nbformat_node(text)) == text, "not what Jupyter writes"
    return text


# --- lists.ipynb: the SAMPLE most end-to-end tests share (90 cells, text outputs) ------------

LISTS: list[Item] = [
    Md("# Lists: The Workhorse of Plain Python\n"),
    Md(
        "Before reaching for an array library it pays to know what the built-in `list` does "
        "well and where it stops. This notebook walks through creating lists, reading them "
        "with indices and slices, reshaping nested lists by hand, joining and splitting "
        "them, and the cost of each operation.\n"
    ),
    Md(
        "We will use a seeded random generator throughout, so that every run of the "
        "notebook prints the same numbers and the outputs below stay meaningful.\n"
    ),
    Md("## Creating Lists\n\nWe start with three lists of random digits: one flat, two nested.\n"),
    "import random\n"
    "rng = random.Random(1789)  # seeded: the same numbers on every run\n"
    "\n"
    "flat = [rng.randrange(10) for _ in range(6)]  # one level\n"
    "grid = [[rng.randrange(10) for _ in range(4)] for _ in range(3)]  # two levels\n"
    "cube = [[[rng.randrange(10) for _ in range(5)] for _ in range(4)] for _ in range(3)]",
    Md("A nested list has no shape of its own, but we can measure one level at a time:\n"),
    'print("cube depth:", 3)\n'
    'print("cube shape:", (len(cube), len(cube[0]), len(cube[0][0])))\n'
    'print("cube size: ", sum(len(row) for plane in cube for row in plane))\n'
    'print("item type: ", type(cube[0][0][0]).__name__)',
    Md(
        "Unlike an array, nothing forces the inner lists to agree in length: the shape above "
        "is only true because we built it that way.\n"
    ),
    Md("## Indexing: Reading Single Elements\n"),
    Md("Indices start at zero, as everywhere in Python:\n"),
    "flat",
    "flat[0]",
    Md("Negative indices count from the end of the list:\n"),
    "flat[-1]",
    "flat[-2]",
    Md("In a nested list each index picks one level, so we chain the brackets:\n"),
    "grid",
    "grid[0][0]",
    "grid[2][0]",
    "grid[2][-1]",
    Md("Elements can be replaced in place through the same notation:\n"),
    "grid[0][0] = 12\ngrid",
    Md(
        "A list holds any object, so nothing stops us from storing a float, or a string, "
        "where a digit used to be:\n"
    ),
    "flat[0] = 3.14159\nflat",
    Md(
        "That freedom is the price of the list's flexibility: each element is a full Python "
        "object with its own type tag and reference count.\n"
    ),
    Md("## Slicing: Reading Runs of Elements\n"),
    Md(
        "The syntax `x[start:stop:step]` reads a run of elements; any of the three can be "
        "left out, and then defaults to the start, the end, and a step of one.\n"
    ),
    "x = list(range(10))\nx",
    "x[:5]  # the first five",
    "x[5:]  # everything after index 5",
    "x[4:7]  # a middle run",
    "x[::2]  # every second element",
    "x[1::2]  # every second element, from index 1",
    Md("A negative step walks backwards, which reverses the list:\n"),
    "x[::-1]",
    "x[5::-2]",
    Md("### Slicing nested lists\n\nA slice of the outer list gives rows; columns take a loop:\n"),
    "grid[:2]  # two rows",
    "[row[:3] for row in grid]  # three columns of every row",
    "[row[0] for row in grid]  # the first column",
    "grid[0]  # the first row",
    Md("### Slices are copies\n\nChanging a slice leaves the original list alone:\n"),
    "head = flat[:2]\nhead[0] = 99\nprint(head)\nprint(flat)",
    Md(
        "This is the opposite of array libraries, whose slices are views on the same memory. "
        "With lists, a copy costs time and memory but can never surprise you.\n"
    ),
    Md("Nested lists are another matter: the slice copies the outer list only.\n"),
    "rows = grid[:2]\nrows[0][0] = 42\nprint(rows)\nprint(grid)",
    Md("The `copy` module makes independent copies of every level:\n"),
    "import copy\n\ndeep = copy.deepcopy(grid)\ndeep[0][0] = 0\nprint(deep[0])\nprint(grid[0])",
    Md("## Reshaping\n\nTo turn a flat list into rows we slice it in steps of the row length:\n"),
    "nine = list(range(1, 10))\nsquare = [nine[i : i + 3] for i in range(0, 9, 3)]\nprint(square)",
    Md("And the other way round, a comprehension with two loops flattens it again:\n"),
    "print([value for row in square for value in row])",
    Md("Transposing swaps rows and columns; `zip` does it in one call:\n"),
    "print([list(column) for column in zip(*square)])",
    Md("## Joining and Splitting\n"),
    Md(
        "Lists concatenate with `+` and repeat with `*`. Both build a new list; "
        "`extend` grows one in place.\n"
    ),
    Md("### Concatenation\n"),
    "a = [1, 2, 3]\nb = [3, 2, 1]\nprint(a + b)\nprint(a * 2)",
    "c = [99, 99, 99]\nprint(a + b + c)",
    Md("Nested lists join along the outer level, stacking rows:\n"),
    "print(square + [[10, 11, 12]])",
    Md("Or along the inner level, row by row, which takes `zip` again:\n"),
    "print([left + right for left, right in zip(square, square)])",
    Md("### Splitting\n\nSlices split a list at any set of points:\n"),
    "digits = [1, 2, 3, 99, 99, 3, 2, 1]\n"
    "points = [0, 3, 5, len(digits)]\n"
    "parts = [digits[i:j] for i, j in zip(points, points[1:])]\n"
    "print(parts)",
    Md("A helper keeps that readable when we need it twice:\n"),
    "def split_at(values, *points):\n"
    "    edges = [0, *points, len(values)]\n"
    "    return [values[i:j] for i, j in zip(edges, edges[1:])]\n"
    "\n"
    "print(split_at(list(range(16)), 4, 12))",
    Md("## Counting, Searching, Sorting\n"),
    Md(
        "The list methods cover the everyday questions: how many, where, and in which "
        "order. Each of them walks the list, so each costs time in proportion to its length.\n"
    ),
    "rolls = [rng.randint(1, 6) for _ in range(20)]\nrolls",
    "rolls.count(6)",
    Md("`index` finds the first match, and raises `ValueError` when there is none:\n"),
    "rolls.index(rolls[-1])",
    "sorted(rolls)",
    Md("`sorted` returns a new list; the `sort` method reorders in place and returns `None`:\n"),
    "rolls.sort(reverse=True)\nprint(rolls[:5])",
    Md("## How Fast Is It?\n"),
    Md(
        "Appending at the end is cheap: the list keeps spare room and grows it "
        "geometrically. Inserting at the front moves every element.\n"
    ),
    "def moved_by_front_inserts(n):\n"
    "    # the k-th insert at the front shifts the k elements already there\n"
    "    return sum(range(n))\n"
    "\n"
    "print('appends move:      ', 0)\n"
    "print('front inserts move:', moved_by_front_inserts(10_000))",
    Md(
        "When you need both ends, `collections.deque` appends and pops at either end in "
        "constant time.\n"
    ),
    "from collections import deque\n\nqueue = deque(range(5))\nqueue.appendleft(-1)\nqueue",
    Md("## Lists and Strings\n"),
    Md(
        "Text is where lists meet the rest of Python most often: `str.split` makes a list of "
        "words, and `str.join` glues a list of strings back together. Between the two, all "
        "the list operations above apply unchanged.\n"
    ),
    "sentence = 'the quick brown fox jumps over the lazy dog'\nwords = sentence.split()\nwords",
    Md("Sorting by a key, here the length of each word, keeps equal keys in their order:\n"),
    "sorted(words, key=len)",
    Md(
        "And a list of words back to one string, with any separator we like. Joining is "
        "linear in the total length, while adding strings one by one in a loop copies the "
        "growing result every time.\n"
    ),
    "' / '.join(reversed(words))",
    Md("## Summary\n"),
    Md(
        "* indices and slices read elements and runs, from either end;\n"
        "* slices are copies, one level deep;\n"
        "* nested lists reshape with comprehensions and `zip`;\n"
        "* `+`, `*` and `extend` join, slices split;\n"
        "* appends are cheap, inserts at the front are not.\n"
        "\n"
        "The next notebook does the same with arrays, and measures the difference.\n"
    ),
]


# --- preface.ipynb: markdown only (9 cells) ----------------------------------------------------

PREFACE: list[Item] = [
    Md("# Preface\n"),
    Md(
        "## Why These Notebooks?\n"
        "\n"
        "These notebooks grew out of a reading group that met once a week to work through "
        "the tools a data analyst uses every day. Each session started from a blank "
        "notebook and ended with one that someone could rerun a year later and get the "
        "same answers. The notebooks in this series keep that rule: seeded randomness, "
        "outputs committed alongside the code, and prose that says why as well as how.\n"
    ),
    Md(
        "## Who Are They For?\n"
        "\n"
        "They are for people who already write some Python and want to analyse data with "
        "it: students, engineers moving from spreadsheets, scientists tired of copying "
        "numbers between programs. You should be comfortable with functions, loops and "
        "dictionaries; everything else is introduced as it comes up.\n"
        "\n"
        "If you have never written Python, start with the official tutorial and come back "
        "after its chapter on data structures.\n"
    ),
    Md(
        "## How to Read Them\n"
        "\n"
        "Run the cells in order. A cell may depend on names defined above it, and the text "
        "between cells often explains an output before you have seen it. When a cell "
        "surprises you, change it and run it again: the notebooks are meant to be edited.\n"
    ),
    Md(
        "## What Is Inside\n"
        "\n"
        "1. *Plain Python*: lists, dictionaries and the standard library.\n"
        "2. *Arrays*: fast numerical work on regular data.\n"
        "3. *Tables*: labelled data, grouping and time series.\n"
        "4. *Plots*: lines, points, and what makes a figure readable.\n"
        "5. *Models*: a first look at clustering and regression.\n"
    ),
    Figure(
        "The reading group's whiteboard, the week we drew the series' plan:\n"
        "\n"
        "![whiteboard](attachment:figure.png)\n",
        48,
    ),
    Md(
        "## Conventions\n"
        "\n"
        "Code appears in `monospace`; names you should replace are in *italics*. Shell "
        "commands start with a `$` prompt, which you do not type. Outputs are shown as the "
        "notebook printed them, including the occasional long line.\n"
    ),
    Md(
        "## Installing What You Need\n"
        "\n"
        "Every notebook runs on a standard Python 3 installation with Jupyter:\n"
        "\n"
        "```\n"
        "$ python3 -m venv .venv\n"
        "$ .venv/bin/pip install jupyterlab\n"
        "$ .venv/bin/jupyter lab\n"
        "```\n"
        "\n"
        "The later parts name the extra packages they use at their start.\n"
    ),
    Md(
        "## Thanks\n"
        "\n"
        "To everyone who came on Thursday evenings, asked the questions these notebooks "
        "try to answer, and found the mistakes that are no longer in them.\n"
    ),
]


# --- kmeans.ipynb: the big one, many PNG outputs (61 cells, about 1.7 MB) ---------------------

# The figures' sizes follow a real notebook's, from 5 KB to 0.6 MB of base64: tests/test_memory.py
# needs strings that big for freed memory to show (13 mid-size ones left RSS near its peak).
KMEANS: list[Item] = [
    Md("# Clustering: k-Means by Hand\n"),
    Md(
        "k-means splits points into *k* groups, each around its mean. It is the simplest "
        "clustering method there is, and writing it in plain Python shows every step the "
        "library versions hide.\n"
    ),
    "import math\nimport random\n\nrng = random.Random(2024)",
    Md("## The Data\n"),
    Md("Three blobs of points, with some overlap between two of them:\n"),
    "centres = [(0.0, 0.0), (5.0, 1.0), (2.5, 4.0)]\n"
    "points = [\n"
    "    (rng.gauss(cx, 1.0), rng.gauss(cy, 1.0)) for cx, cy in centres for _ in range(100)\n"
    "]\n"
    "len(points)",
    Plot("plt.scatter(*zip(*points), s=10);", 127),
    Md("We forget which blob each point came from; finding that out again is the task.\n"),
    "rng.shuffle(points)\npoints[:3]",
    Plot("plt.scatter(*zip(*points), s=10, c='grey');", 177),
    Md("## The Algorithm\n"),
    Md(
        "Start from *k* guesses for the centres, then repeat two steps until nothing "
        "changes:\n"
        "\n"
        "1. assign each point to its nearest centre;\n"
        "2. move each centre to the mean of its points.\n"
    ),
    Md("Both steps can only lower the total squared distance, so the loop ends.\n"),
    "def nearest(point, means):\n"
    "    return min(range(len(means)), key=lambda i: math.dist(point, means[i]))\n"
    "\n"
    "\n"
    "def mean(group):\n"
    "    return tuple(sum(axis) / len(group) for axis in zip(*group))",
    Md("### One step at a time\n"),
    Md("The first guesses are three of the points themselves:\n"),
    "means = rng.sample(points, 3)\nlabels = [nearest(p, means) for p in points]\n"
    "[labels.count(i) for i in range(3)]",
    Plot("plt.scatter(*zip(*points), c=labels, s=10); plt.scatter(*zip(*means), c='red');", 175),
    Md("Moving the centres to the means of their groups:\n"),
    "means = [mean([p for p, l in zip(points, labels) if l == i]) for i in range(3)]\n"
    "[tuple(round(v, 2) for v in m) for m in means]",
    Plot("plt.scatter(*zip(*points), c=labels, s=10); plt.scatter(*zip(*means), c='red');", 178),
    Md("And assigning again, with the moved centres:\n"),
    "labels = [nearest(p, means) for p in points]\n[labels.count(i) for i in range(3)]",
    Plot("plt.scatter(*zip(*points), c=labels, s=10); plt.scatter(*zip(*means), c='red');", 178),
    Figure(
        "Each step on its own, as a picture of the loop:\n\n![steps](attachment:figure.png)\n",
        64,
    ),
    Md("### The whole loop\n"),
    "def kmeans(points, k, rng, rounds=100):\n"
    "    means = rng.sample(points, k)\n"
    "    for _ in range(rounds):\n"
    "        labels = [nearest(p, means) for p in points]\n"
    "        moved = [mean([p for p, l in zip(points, labels) if l == i]) for i in range(k)]\n"
    "        if moved == means:\n"
    "            break\n"
    "        means = moved\n"
    "    return means, labels",
    "means, labels = kmeans(points, 3, rng)\n[labels.count(i) for i in range(3)]",
    Md("Coloured by the cluster each point ended in:\n"),
    Plot("plt.scatter(*zip(*points), c=labels, s=10);", 169),
    Md("The centres found are close to the ones the data was drawn around:\n"),
    Plot("plt.scatter(*zip(*means), marker='x'); plt.scatter(*zip(*centres), marker='+');", 168),
    Md("## What Can Go Wrong\n"),
    Md(
        "k-means finds *a* local optimum, not the best one. Which one depends on the first "
        "guesses, so libraries run it several times and keep the best result.\n"
    ),
    Md("### Measuring a result\n"),
    Md("The total squared distance of the points to their centres tells results apart:\n"),
    "def inertia(points, means, labels):\n"
    "    return sum(math.dist(p, means[l]) ** 2 for p, l in zip(points, labels))\n"
    "\n"
    "round(inertia(points, means, labels), 1)",
    Md("Over ten runs from different first guesses:\n"),
    "runs = [kmeans(points, 3, random.Random(seed)) for seed in range(10)]\n"
    "sorted(round(inertia(points, m, l), 1) for m, l in runs)",
    Md("### Choosing k\n"),
    Plot(
        "ks = range(1, 9)\nplt.plot(ks, [inertia(points, *kmeans(points, k, rng)) for k in ks]);",
        61,
    ),
    Md(
        "Inertia always falls as *k* grows. The bend in the curve, where adding a cluster "
        "stops paying, is the usual rule of thumb.\n"
    ),
    "k_inertia = {k: round(inertia(points, *kmeans(points, k, rng))) for k in range(1, 6)}\n"
    "k_inertia",
    Md("### Clusters that are not round\n"),
    Plot("moons = make_moons(200, noise=0.05)\nplt.scatter(*zip(*moons), s=10);", 117),
    Md("Two interleaved half-moons: their means sit between them, and k-means cuts across.\n"),
    "'k-means assumes round clusters of similar size'",
    Plot("plt.scatter(*zip(*moons), c=kmeans(moons, 2, rng)[1], s=10);", 371),
    Md("## An Application: Fewer Colours\n"),
    Md(
        "Clustering the colours of an image into *k* groups and repainting each pixel with "
        "its group's mean keeps the picture recognisable with far fewer colours.\n"
    ),
    Figure("The original photograph:\n\n![photo](attachment:figure.png)\n", 96),
    Plot("plt.imshow(photo);", 505),
    Md("Each pixel is a point in three dimensions, red, green and blue:\n"),
    "pixels = [(rng.random(), rng.random(), rng.random()) for _ in range(300)]\n"
    "len(pixels), len(pixels[0])",
    Md("With sixteen colours:\n"),
    "palette, _ = kmeans(pixels, 16, rng, rounds=5)\nlen(palette)",
    Md("The recoloured image next to the original:\n"),
    Plot("plt.imshow(recoloured(photo, palette));", 480),
    Plot(
        "fig, ax = plt.subplots(1, 2)\n"
        "ax[0].imshow(photo)\n"
        "ax[1].imshow(recoloured(photo, palette));",
        670,
    ),
    Md("## Summary\n"),
    Md(
        "k-means is two lines of logic in a loop. Its limits, local optima, a *k* chosen "
        "beforehand, and round clusters, are as simple to see as its steps.\n"
    ),
]


# --- timeseries.ipynb: HTML tables and images -------------------------------------------------

TIMESERIES: list[Item] = [
    Md("# Dates and Times in Plain Python\n"),
    Md(
        "The `datetime` module covers most of what a time series needs: points in time, "
        "durations between them, and formatting. This notebook builds a small daily series "
        "of readings and summarises it by week.\n"
    ),
    "import datetime as dt\nimport random\n\nrng = random.Random(31)",
    Md("## Points in Time\n"),
    "start = dt.date(2024, 3, 1)\nstart",
    "start + dt.timedelta(days=30)",
    Md("Dates print in ISO 8601 form by default, and `strftime` formats them any other way:\n"),
    "start.strftime('%A %d %B %Y')",
    Md("## A Daily Series\n"),
    Table(
        "days = [start + dt.timedelta(days=i) for i in range(28)]\n"
        "readings = [round(20 + 5 * rng.random(), 1) for _ in days]\n"
        "[{'date': d.isoformat(), 'reading': r} for d, r in list(zip(days, readings))[:8]]"
    ),
    Plot("plt.plot(days, readings);", 180),
    Md("## Weekly Summaries\n"),
    Md("Grouping by ISO week number, the way a spreadsheet's pivot table would:\n"),
    Table(
        "weeks = {}\n"
        "for day, reading in zip(days, readings):\n"
        "    weeks.setdefault(day.isocalendar().week, []).append(reading)\n"
        "[\n"
        "    {'week': w, 'days': len(r), 'mean': round(sum(r) / len(r), 2), 'max': max(r)}\n"
        "    for w, r in weeks.items()\n"
        "]"
    ),
    Plot("plt.bar(list(weeks), [max(r) for r in weeks.values()]);", 160),
    Figure("The same summary as drawn by hand:\n\n![sketch](attachment:figure.png)\n", 40),
    Md("## Rolling Means\n"),
    Md("A seven-day rolling mean smooths the day-to-day noise:\n"),
    Table(
        "rolling = [round(sum(readings[i - 6 : i + 1]) / 7, 2) for i in range(6, len(readings))]\n"
        "[{'date': d.isoformat(), 'rolling': r} for d, r in zip(days[6:], rolling)][:6]"
    ),
    Plot("plt.plot(days, readings); plt.plot(days[6:], rolling);", 200),
    Md("## Time Zones\n"),
    "utc = dt.datetime(2024, 3, 31, 0, 30, tzinfo=dt.timezone.utc)\n"
    "print(utc.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat())",
    Md(
        "Store times in UTC and convert only to show them: sums and differences of times "
        "then never cross a daylight-saving change.\n"
    ),
]


# --- lineplots.ipynb: PNG outputs -------------------------------------------------------------

LINEPLOTS: list[Item] = [
    Md("# Simple Line Plots\n"),
    Md("Line plots show one quantity as a function of another. We draw a few with matplotlib.\n"),
    "import math\n\nxs = [i / 10 for i in range(101)]",
    Md("## A First Plot\n"),
    Plot("plt.plot(xs, [math.sin(x) for x in xs]);", 150),
    Md("Calling `plot` again draws on the same axes:\n"),
    Plot("plt.plot(xs, [math.sin(x) for x in xs])\nplt.plot(xs, [math.cos(x) for x in xs]);", 170),
    Md("## Colours and Styles\n"),
    Plot("for shift in range(6):\n    plt.plot(xs, [math.sin(x - shift) for x in xs]);", 190),
    Plot("plt.plot(xs, xs, '-g')\nplt.plot(xs, [x + 1 for x in xs], '--c');", 160),
    Md("## Axis Limits\n"),
    Plot("plt.plot(xs, [math.sin(x) for x in xs])\nplt.xlim(-1, 11)\nplt.ylim(-1.5, 1.5);", 180),
    Md("## Labels\n"),
    Plot(
        "plt.plot(xs, [math.sin(x) for x in xs])\nplt.title('A Sine Curve')\nplt.xlabel('x');",
        200,
    ),
    Md("A legend names each line, from the `label` of each call:\n"),
    Plot(
        "plt.plot(xs, [math.sin(x) for x in xs], label='sin(x)')\n"
        "plt.plot(xs, [math.cos(x) for x in xs], label='cos(x)')\n"
        "plt.legend();",
        210,
    ),
    Md("Fewer, clearer lines beat more lines: each one the reader must tell apart costs.\n"),
]

NOTEBOOKS: dict[str, tuple[list[Item], int]] = {
    "preface.ipynb": (PREFACE, 0),
    "lists.ipynb": (LISTS, 1),
    "timeseries.ipynb": (TIMESERIES, 3),
    "lineplots.ipynb": (LINEPLOTS, 4),
    "kmeans.ipynb": (KMEANS, 5),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    check = parser.parse_args().check
    stale = []
    for name, (items, seed) in NOTEBOOKS.items():
        text, path = build(items, seed), OUT / name
        if check:
            if not path.exists() or path.read_bytes() != text.encode():
                stale.append(name)
        else:
            path.write_bytes(text.encode())  # bytes: no newline translation
            print(f"{path}: {len(text.encode())} bytes")
    if stale:
        print(f"stale (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
