"""How classify and bench results look on a terminal: rich tables and a progress bar."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from edge_ssl import contract
from edge_ssl.console import LOGGER
from edge_ssl.progress import PROGRESS
from edge_ssl.runtime.classify import ClassifyResult
from edge_ssl.runtime.evaluate import Evaluation
from edge_ssl.runtime.latency import BenchReport, BenchResult
from edge_ssl.runtime.metrics import macro
from edge_ssl.runtime.output import Failure, Prediction, Row
from edge_ssl.runtime.parallel import Layout

PROGRESS_FROM = 256  # files; smaller jobs are done before a bar is worth drawing


class _ProgressRecords(logging.Handler):
    """Passes the counts the stages log (edge_ssl.progress) to a bar's update function."""

    def __init__(self, update: Callable[[int, int], None]) -> None:
        super().__init__(logging.DEBUG)
        self.update = update

    def emit(self, record: logging.LogRecord) -> None:
        counts = getattr(record, PROGRESS, None)
        if counts is not None:
            self.update(*counts)


@contextmanager
def progress_bar(console: Console, show: bool | None = None,
                 what: str = "classifying") -> Iterator[Callable[[int, int], None]]:
    """Draw the counts the stages log as a bar on `console` when it is a terminal; yields the
    bar's update function, `update(done, total)`.

    `show`: True for every job, None for jobs of PROGRESS_FROM files or more, False never.
    Piped or redirected output never gets a bar.
    """
    bar: Progress | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if show is False or not console.is_terminal or (show is None and total < PROGRESS_FROM):
            return
        if bar is None:
            bar = Progress(what, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           console=console, transient=True)
            bar.add_task(what, total=total)
            bar.start()
        bar.update(bar.task_ids[0], completed=done)

    logger = logging.getLogger(LOGGER)
    records, level = _ProgressRecords(update), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)  # progress records are DEBUG; the line printer takes INFO
    try:
        yield update
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        if bar is not None:
            bar.stop()


class RowPrinter:
    """Prints each batch's rows as they come: predictions as aligned plain text on `out` (when
    `predictions`), unreadable files as "skipped" lines on `err`.

    Plain text rather than a rich Table, whose layout costs more per row than classifying the
    image (docs/benchmarks.md). Column widths come from every path and label, known before the
    first row.
    """

    def __init__(self, out: Console, err: Console, predictions: bool) -> None:
        self._out, self._err, self._predictions = out, err, predictions
        self._widths = (0, 0, len("confidence"))
        self._rotation = False
        self._header = False
        self.seen = 0  # rows received so far

    def start(self, result: ClassifyResult, paths: Sequence[Path]) -> None:
        self._rotation = result.info.task == contract.TASK_ROTATION
        labels = [self._label(label) for label in result.info.labels]
        self._widths = (max(len(str(p)) for p in [Path("path"), *paths]),
                        max(len(label) for label in [_heading(result), *labels]),
                        len("confidence"))

    def rows(self, rows: Sequence[Row]) -> None:
        self.seen += len(rows)
        for row in rows:
            if isinstance(row, Failure):
                message = escape(f"{row.path}: {row.reason}")
                self._err.print(f"[yellow]skipped[/] {message}", soft_wrap=True)
        if not self._predictions:
            return
        lines = [self._line(str(r.path), self._label(r.label), f"{r.confidence:.3f}",
                            ", ".join(f"{self._label(label)} {conf:.3f}"
                                      for label, conf in r.top_k[1:]))
                 for r in rows if isinstance(r, Prediction)]
        if lines and not self._header:
            self._header = True
            heading = "rotation" if self._rotation else "label"
            top_k = any(isinstance(r, Prediction) and len(r.top_k) > 1 for r in rows)
            self._out.print(self._line("path", heading, "confidence",
                                       "next best" if top_k else ""),
                            style="bold", markup=False, highlight=False, soft_wrap=True)
        if lines:
            self._out.out("\n".join(lines), highlight=False)

    def _line(self, path: str, label: str, confidence: str, rest: str) -> str:
        w = self._widths
        text = f"{path:<{w[0]}}  {label:<{w[1]}}  {confidence:>{w[2]}}"
        return f"{text}  {rest}" if rest else text

    def _label(self, label: str) -> str:
        # Rotation labels are degrees counter-clockwise (contract.ROTATION_LABELS).
        return f"{label}°" if self._rotation else label


def print_summary(result: ClassifyResult, console: Console) -> None:
    """Images per label with their mean confidence, then how the job ran."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column(_heading(result))
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("mean confidence", justify="right")
    total = result.classified
    for label in result.info.labels:
        n = result.label_counts[label]
        mean = f"{result.confidence_sums[label] / n:.3f}" if n else "-"
        share = f"{n / total:.0%}" if total else "-"
        table.add_row(escape(_label(result, label)), f"{n:,}", share, mean)
    console.print(table)
    skipped = f"; {len(result.failures):,} skipped" if result.failures else ""
    console.print(
        f"classified {total:,} of {result.files:,} images in "
        f"{result.seconds:.2f} s ({result.images_per_second:,.0f} images/s) with "
        f"{escape(str(result.info.path))} on {result.provider}, {result.layout}{skipped}",
        soft_wrap=True,
    )
    if result.output is not None:
        rows = total + len(result.failures)
        console.print(f"wrote {rows:,} rows ({total:,} predictions) to "
                      f"{escape(str(result.output))}", soft_wrap=True)


def evaluation_tables(result: Evaluation) -> list[Table]:
    """The models side by side, per-class precision/recall/F1 of each model, then how often
    every two models give the same top-1."""
    summary = Table(title=f"{len(result.paths):,} labelled images of {result.data.root} "
                          f"({result.data.kind})", title_justify="left", box=box.SIMPLE_HEAD,
                    pad_edge=False)
    for name in ("model", "accuracy (95% CI)", "macro F1", "ms/image"):
        summary.add_column(name, justify="left" if name == "model" else "right")
    for model in result.models:
        low, high = model.accuracy.ci95
        f1 = macro(model.classes, "f1")
        summary.add_row(escape(model.name),
                        f"{model.accuracy.percent:.1f}% ({low:.1f}–{high:.1f})",
                        "-" if f1 is None else f"{f1:.3f}", f"{model.ms_per_image:.2f}")
    tables = [summary]
    for model in result.models:
        table = Table(title=f"{model.name}: per class", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        for name in ("class", "images", "precision", "recall", "F1", "predicted"):
            table.add_column(name, justify="left" if name == "class" else "right")
        for c in model.classes:
            table.add_row(escape(c.label), f"{c.support:,}", _share(c.precision),
                          _share(c.recall), _share(c.f1), f"{c.predicted:,}")
        tables.append(table)
    if result.agreement:
        pairs = Table(title="same top-1 answer", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for name in ("models", "agree (95% CI)", "differ"):
            pairs.add_column(name, justify="left" if name == "models" else "right")
        for (i, j), rate in result.agreement.items():
            low, high = rate.ci95
            pairs.add_row(escape(f"{result.models[i].name} vs {result.models[j].name}"),
                          f"{rate.percent:.1f}% ({low:.1f}–{high:.1f})",
                          f"{rate.n - rate.hits:,}")
        tables.append(pairs)
    return tables


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def bench_tables(report: BenchReport) -> tuple[Table, Table]:
    """The models (size, provider), then their timings side by side per batch size, each in
    its layout (sessions × threads per session; `auto`: onnxruntime's default).

    Two narrow tables rather than one wide one, so that both fit an 80-column terminal.
    """
    cpu = report.cpu
    features = ", ".join(cpu.features) or "instruction set unknown"
    models = Table(title=f"{cpu.name}, {cpu.logical_cores} cores ({features}); "
                         f"onnxruntime {report.onnxruntime}", title_justify="left",
                   box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("model", "precision", "MB", "provider"):
        models.add_column(name, justify="right" if name == "MB" else "left")
    names: dict[str, str] = {}
    for r in report.results:
        if r.model not in names:
            names[r.model] = _short_name(r.model, [x.model for x in report.results])
            models.add_row(escape(names[r.model]), r.precision or "?", f"{r.file_size / 1e6:.1f}",
                           r.provider)
    timings = Table(title=f"latency after {report.warmup} warm-up runs; images/s over the "
                          "timed runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("batch", "model", "layout", "p50 ms", "p90 ms", "p99 ms", "images/s",
                 "vs first"):
        timings.add_column(name, justify="left" if name == "model" else "right")
    first: dict[int, float] = {}
    ordered = sorted(report.results, key=lambda r: r.batch_size)  # stable: models keep order
    for i, r in enumerate(ordered):
        if i > 0 and ordered[i - 1].batch_size != r.batch_size:
            timings.add_section()
        base = first.setdefault(r.batch_size, r.images_per_s)
        timings.add_row(str(r.batch_size), escape(names[r.model]),
                        f"{r.sessions}×{r.threads or 'auto'}", f"{r.p50_ms:.2f}",
                        f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.images_per_s:,.0f}",
                        f"{r.images_per_s / base:.2f}×")
    return models, timings


def bench_summary(report: BenchReport) -> list[str]:
    """Per model: its batch-1 latency and its best throughput, each with the layout that ran."""
    lines = []
    models = [r.model for r in report.results]
    for model in dict.fromkeys(models):
        rows = [r for r in report.results if r.model == model]
        parts = [f"{escape(_short_name(model, models))}:"]
        single = next((r for r in rows if r.batch_size == 1), None)
        if single is not None:
            parts.append(f"batch 1 in {single.p50_ms:.2f} / {single.p90_ms:.2f} / "
                         f"{single.p99_ms:.2f} ms (p50 / p90 / p99, {_layout(single)});")
        best = max(rows, key=lambda r: r.images_per_s)
        parts.append(f"best {best.images_per_s:,.0f} images/s at batch {best.batch_size} "
                     f"({_layout(best)})")
        lines.append(" ".join(parts))
    return lines


def _layout(result: BenchResult) -> str:
    return str(Layout(result.sessions, result.threads))


def _short_name(model: str, models: list[str]) -> str:
    # The file name keeps the table narrow; the full path only when two models share a name.
    name = Path(model).name
    return name if all(Path(m).name != name or m == model for m in models) else model


def _heading(result: ClassifyResult) -> str:
    return "rotation" if result.info.task == contract.TASK_ROTATION else "label"


def _label(result: ClassifyResult, label: str) -> str:
    # Rotation labels are degrees counter-clockwise (contract.ROTATION_LABELS).
    return f"{label}°" if result.info.task == contract.TASK_ROTATION else label
