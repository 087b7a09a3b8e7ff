"""Performance targets as ratios of medians measured in one session, for the terminal and JSON.

Ratios, not absolute times, are what carry from one machine to another: every pair below was
measured in the same run, on the same inputs, with the same thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edge_ssl.runtime.parallel import Layout


@dataclass(frozen=True)
class Measurement:
    """One benchmark's median and fastest call, and how many images (or samples) a call handles.

    Ratios use the median; the fastest call shows how much a busy machine disturbed it.
    """

    name: str
    seconds: float
    best: float
    items: int

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


@dataclass
class Results:
    """Everything one session measured: timings by benchmark key, accuracy by runtime."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # runtime → top-1 % on validation
    input_wait: dict[str, float] = field(default_factory=dict)  # pipeline source → share of epoch
    layouts: dict[str, Layout] = field(default_factory=dict)  # benchmark key → layout timed
    serving: dict[str, dict[str, float]] = field(default_factory=dict)  # load → its numbers

    def add(self, name: str, seconds: float, items: int, best: float | None = None) -> None:
        self.measurements[name] = Measurement(name, seconds, seconds if best is None else best,
                                              items)

    def add_times(self, name: str, times: list[float], items: int) -> float:
        """`add` from every call's seconds: their median and fastest. Returns the median."""
        median = float(np.median(times))
        self.add(name, median, items, best=min(times))
        return median

    def median(self, name: str) -> float | None:
        found = self.measurements.get(name)
        return found.seconds if found else None

    def fastest(self, name: str) -> float | None:
        found = self.measurements.get(name)
        return found.best if found else None

    def items(self, name: str) -> int:
        return self.measurements[name].items if name in self.measurements else 1


Seconds = Callable[[str], float | None]  # benchmark key → seconds per call


@dataclass(frozen=True)
class Target:
    """One performance target of edge-ssl, its measured value, and whether this run kept it.

    `value` is computed from medians and decides `met`; `fastest` is the same ratio from each
    benchmark's fastest call, which a busy or shared machine disturbs least.
    """

    name: str
    value: float | None  # None: not measured in this session (a peer missing, a test deselected)
    fastest: float | None
    goal: str  # e.g. "≤ 0.05"; "context" rows have no pass/fail
    met: bool | None
    unit: str = "×"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def targets(results: Results, vnni: bool) -> list[Target]:
    """The performance targets from `results`; speed ratios above 1 mean edge-ssl is faster."""
    rows: list[Target] = []

    def row(name: str, compute: Callable[[Seconds], float | None], goal: str,
            check: Callable[[float], bool] | None = None, unit: str = "×") -> None:
        value, fastest = compute(results.median), compute(results.fastest)
        rows.append(Target(name, value, fastest, goal,
                           None if value is None or check is None else check(value), unit))

    def time_ratio(numerator: str, denominator: str) -> Callable[[Seconds], float | None]:
        return lambda t: _ratio(t(numerator), t(denominator))

    def rate(name: str) -> Callable[[Seconds], float | None]:
        return lambda t: _ratio(results.items(name), t(name))

    def rate_ratio(numerator: str, denominator: str) -> Callable[[Seconds], float | None]:
        return lambda t: _ratio(rate(numerator)(t), rate(denominator)(t))

    row("ONNX FP32 batch-1 latency / Keras predict_on_batch",
        time_ratio("onnx-fp32-b1", "keras-predict_on_batch-b1"), "≤ 0.05", lambda v: v <= 1 / 20)
    row("ONNX FP32 batch-1 latency / Keras tf.function",
        time_ratio("onnx-fp32-b1", "keras-tf.function-b1"), "context")
    for precision in ("fp32", "int8"):
        kind = precision.upper()
        row(f"ONNX {kind} batch-1 latency / LiteRT {kind}'s",
            time_ratio(f"onnx-{precision}-b1", f"litert-{precision}-b1"), "≤ 1.25",
            lambda v: v <= 1.25)
        row(f"ONNX {kind} throughput / LiteRT {kind}'s, batch 32",
            time_ratio(f"litert-{precision}-b32", f"onnx-{precision}-b32"), "≥ 1",
            lambda v: v >= 1.0)
        for batch in (1, 32):
            row(f"ONNX {kind} speed / OpenVINO {kind}, batch {batch}",
                time_ratio(f"openvino-{precision}-b{batch}", f"onnx-{precision}-b{batch}"),
                "context")
    row("ONNX INT8 / FP32 batch-1 latency", time_ratio("onnx-int8-b1", "onnx-fp32-b1"), "≤ 1",
        lambda v: v <= 1.0)
    row("ONNX INT8 / FP32 throughput, batch 32" + ("" if vnni else " (no VNNI)"),
        time_ratio("onnx-fp32-b32", "onnx-int8-b32"), "≥ 2" if vnni else "≥ 2 on VNNI",
        (lambda v: v >= 2.0) if vnni else None)
    row("ONNX FP32 batch 32: the contender / the same in a bare process",
        time_ratio("onnx-fp32-b32", "onnx-fp32-bare-b32"), "0.9–1.1",
        lambda v: 0.9 <= v <= 1.1)
    fp32, int8 = results.accuracy.get("onnx-fp32"), results.accuracy.get("onnx-int8")
    loss = None if fp32 is None or int8 is None else fp32 - int8
    row("ONNX INT8 accuracy loss on the validation images", lambda _: loss, "≤ 1",
        lambda v: v <= 1.0, " points")
    row("ONNX FP16 / FP32 throughput, batch 32", time_ratio("onnx-fp32-b32", "onnx-fp16-b32"),
        "context")
    for precision in ("fp32", "int8"):
        row(f"classify a JPEG folder / the model's batch-32 throughput, {precision.upper()}",
            rate_ratio(f"classify-{precision}", f"classify-{precision}-model-b32"), "≥ 0.7",
            lambda v: v >= 0.70)
    served = {name: load["requests_per_s"] for name, load in results.serving.items()}
    row("serve, 8 clients: batched / unbatched requests/s",
        lambda _: _ratio(served.get("serve-batched-c8"), served.get("serve-unbatched-c8")),
        "context")
    row("CLI start-up to first result", lambda t: t("cli-startup"), "< 1",
        lambda v: v < 1.0, " s")
    row("input pipeline: a step on JPEG files / on cached tensors",
        time_ratio("pipeline-files", "pipeline-cached"), "≤ 1.15", lambda v: v <= 1.15)
    # The same ratio from the share of each epoch spent waiting for input (compute per step
    # being equal): immune to the machine's speed changing between the two benchmarks.
    files, cached = results.input_wait.get("files"), results.input_wait.get("cached")
    starved = None if files is None or cached is None else (1 - cached) / (1 - files)
    row("  … the same, from time spent waiting for input", lambda _: starved, "≤ 1.15",
        lambda v: v <= 1.15)
    for stage in ("pretext", "finetune"):
        row(f"training images/s, {stage} step", rate(f"train-step-{stage}"),
            "about 160 (width 1.0, 64×64)", unit=" img/s")
    return rows


def format_targets(rows: list[Target]) -> list[str]:
    """A header, then one line per target: name, median ratio, fastest-call ratio, goal, verdict."""
    width = max(len(row.name) for row in rows)
    lines = [f"{'':<{width}}  {'medians':>14}  {'fastest calls':>14}  goal"]
    for row in rows:
        value, fastest = ("not measured" if v is None else f"{v:.3g}{row.unit}"
                          for v in (row.value, row.fastest))
        verdict = {True: "met", False: "NOT MET", None: ""}[row.met]
        lines.append(f"{row.name:<{width}}  {value:>14}  {fastest:>14}  {row.goal:<28} "
                     f"{verdict}")
    return lines


def format_measurements(results: Results) -> list[str]:
    """The absolute numbers behind the ratios: ms per call (median, fastest) and items/s."""
    width = max((len(name) for name in results.measurements), default=0)
    lines = [f"{'':<{width}}  {'median ms':>10}  {'fastest ms':>10}  {'per second':>10}"]
    lines += [f"{m.name:<{width}}  {m.seconds * 1e3:10.3f}  {m.best * 1e3:10.3f}  "
              f"{m.per_second:10.1f}  ({m.items} per call"
              + (f"; {results.layouts[m.name]}" if m.name in results.layouts else "") + ")"
              for m in results.measurements.values()]
    lines += [f"{name:<{width}}  p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms, "
              f"{load['requests_per_s']:,.0f} requests/s ({load['requests']:.0f} requests)"
              for name, load in results.serving.items()]
    return lines


def to_json(results: Results, rows: list[Target]) -> dict[str, object]:
    return {"targets": [asdict(row) for row in rows],
            "medians": {name: {"seconds": m.seconds, "fastest_seconds": m.best,
                               "items": m.items, "per_second": m.per_second}
                        for name, m in results.measurements.items()},
            "layouts": {name: layout.to_json() for name, layout in results.layouts.items()},
            "serving": results.serving,
            "accuracy_percent": results.accuracy,
            "share_of_epoch_waiting_for_input": results.input_wait}
