"""How classify and bench results look on a terminal: rich tables and a progress bar."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from edge_ssl import contract
from edge_ssl.runtime.bench import BenchReport
from edge_ssl.runtime.classify import ClassifyResult, ProgressCallback

PROGRESS_FROM = 256  # files; smaller jobs are done before a bar is worth drawing


@contextmanager
def progress_bar(console: Console) -> Iterator[ProgressCallback]:
    """A `classify` progress callback: a bar on `console` for long jobs on a terminal."""
    bar: Progress | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total < PROGRESS_FROM or not console.is_terminal:
            return
        if bar is None:
            bar = Progress("classifying", BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=console, transient=True)
            bar.add_task("classify", total=total)
            bar.start()
        bar.update(bar.task_ids[0], completed=done)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def print_failures(result: ClassifyResult, console: Console) -> None:
    """One line per file that was skipped, with its reason."""
    for failure in result.failures:
        console.print(f"[yellow]skipped[/] {escape(failure.message)}", soft_wrap=True)


def print_predictions(result: ClassifyResult, console: Console) -> None:
    """Every prediction as an aligned plain-text row.

    Plain text rather than a rich Table: laying out a Table costs ~0.3 ms a row, which would add
    over half a second to a 2,000-image folder that takes about a second to classify.
    """
    rows = [(str(p.path), _label(result, p.label), f"{p.confidence:.3f}",
             ", ".join(f"{_label(result, label)} {conf:.3f}" for label, conf in p.top_k[1:]))
            for p in result.predictions]
    header = ("path", _heading(result), "confidence", "next best")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str, str]) -> str:
        text = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"
        return f"{text}  {row[3]}" if row[3] else text

    top_k = any(r[3] for r in rows)
    console.print(line(header if top_k else (*header[:3], "")), style="bold",
                  markup=False, highlight=False, soft_wrap=True)
    console.out("\n".join(line(r) for r in rows) + "\n", highlight=False)


def print_summary(result: ClassifyResult, console: Console) -> None:
    """Images per label with their mean confidence, then how the job ran."""
    counts = Counter(p.label for p in result.predictions)
    confidence: dict[str, float] = defaultdict(float)
    for p in result.predictions:
        confidence[p.label] += p.confidence
    table = Table(show_edge=False, pad_edge=False)
    table.add_column(_heading(result))
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("mean confidence", justify="right")
    total = len(result.predictions)
    for label in result.info.labels:
        n = counts[label]
        mean = f"{confidence[label] / n:.3f}" if n else "-"
        table.add_row(escape(_label(result, label)), f"{n:,}", f"{n / total:.0%}", mean)
    console.print(table)
    threads = result.threads or "default"
    skipped = f"; {len(result.failures):,} skipped" if result.failures else ""
    console.print(
        f"classified {total:,} of {total + len(result.failures):,} images in "
        f"{result.seconds:.2f} s ({result.images_per_second:,.0f} images/s) with "
        f"{escape(str(result.info.path))} on {result.provider}, threads: {threads}{skipped}",
        soft_wrap=True,
    )
    if result.output is not None:
        console.print(f"wrote {total:,} predictions to {escape(str(result.output))}",
                      soft_wrap=True)


def bench_tables(report: BenchReport) -> tuple[Table, Table]:
    """The models (size, provider, threads), then their timings side by side per batch size.

    Two narrow tables rather than one wide one, so that both fit an 80-column terminal.
    """
    cpu = report.cpu
    features = ", ".join(cpu.features) or "instruction set unknown"
    models = Table(title=f"{cpu.name}, {cpu.logical_cores} cores ({features}); "
                         f"onnxruntime {report.onnxruntime}", title_justify="left",
                   box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("model", "precision", "MB", "provider", "threads"):
        models.add_column(name, justify="right" if name == "MB" else "left")
    names: dict[str, str] = {}
    for r in report.results:
        if r.model not in names:
            names[r.model] = _short_name(r.model, [x.model for x in report.results])
            models.add_row(escape(names[r.model]), r.precision or "?", f"{r.file_size / 1e6:.1f}",
                           r.provider, str(r.threads or "auto"))
    timings = Table(title=f"latency after {report.warmup} warm-up runs; images/s over the "
                          "timed runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("batch", "model", "p50 ms", "p90 ms", "p99 ms", "images/s", "vs first"):
        timings.add_column(name, justify="left" if name == "model" else "right")
    first: dict[int, float] = {}
    ordered = sorted(report.results, key=lambda r: r.batch_size)  # stable: models keep order
    for i, r in enumerate(ordered):
        if i > 0 and ordered[i - 1].batch_size != r.batch_size:
            timings.add_section()
        base = first.setdefault(r.batch_size, r.images_per_s)
        timings.add_row(str(r.batch_size), escape(names[r.model]), f"{r.p50_ms:.2f}",
                        f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.images_per_s:,.0f}",
                        f"{r.images_per_s / base:.2f}×")
    return models, timings


def _short_name(model: str, models: list[str]) -> str:
    # The file name keeps the table narrow; the full path only when two models share a name.
    name = Path(model).name
    return name if all(Path(m).name != name or m == model for m in models) else model


def _heading(result: ClassifyResult) -> str:
    return "rotation" if result.info.task == contract.TASK_ROTATION else "label"


def _label(result: ClassifyResult, label: str) -> str:
    # Rotation labels are degrees counter-clockwise (contract.ROTATION_LABELS).
    return f"{label}°" if result.info.task == contract.TASK_ROTATION else label
