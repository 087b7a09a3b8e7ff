"""`edge-ssl bench` and the CPU description it prints, with tiny models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx_models
import pytest
from typer.testing import CliRunner, Result

from edge_ssl.cli import app
from edge_ssl.runtime.cpu import CpuInfo, cpu_info, parse_cpuinfo
from edge_ssl.runtime.latency import BenchConfig, BenchReport, BenchResult

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
"""
ARM = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    return (onnx_models.build_model(folder / "colour.onnx"),
            onnx_models.rotation_model(folder / "pretext.onnx", size=12))


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["bench", *map(str, args)])


def test_json_holds_every_field(tmp_path: Path, models: tuple[Path, Path]) -> None:
    out = tmp_path / "bench.json"

    result = invoke(*models, "--batch-sizes", "1,3", "--warmup", "1", "--iterations", "5",
                    "--threads", "1", "--device", "cpu", "--json", out)

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) == {f.name for f in dataclasses.fields(BenchReport)}
    assert set(report["cpu"]) == {f.name for f in dataclasses.fields(CpuInfo)}
    rows = report["results"]
    assert [(Path(r["model"]).name, r["batch_size"]) for r in rows] == [
        ("colour.onnx", 1), ("colour.onnx", 3), ("pretext.onnx", 1), ("pretext.onnx", 3)]
    for row in rows:
        assert set(row) == {f.name for f in dataclasses.fields(BenchResult)}
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["images_per_s"] == pytest.approx(row["batch_size"] * 1e3 / row["mean_ms"])
        assert row["provider"] == "CPUExecutionProvider"
        assert (row["sessions"], row["threads"], row["iterations"]) == (1, 1, 5)
        assert row["file_size"] == Path(row["model"]).stat().st_size
    assert [r["image_size"] for r in rows] == [8, 8, 12, 12]
    assert report["warmup"] == 1


def test_each_batch_size_gets_the_layout_asked_for(tmp_path: Path,
                                                   models: tuple[Path, Path]) -> None:
    out = tmp_path / "bench.json"

    result = invoke(models[0], "--batch-sizes", "1,4", "--warmup", "1", "--iterations", "3",
                    "--sessions", "2", "--device", "cpu", "--json", out)

    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert [(r["batch_size"], r["sessions"]) for r in rows] == [(1, 2), (4, 2)]
    assert "2×" in result.stdout


def test_table_shows_models_side_by_side(models: tuple[Path, Path]) -> None:
    result = invoke(*models, "--batch-sizes", "2", "--warmup", "0", "--iterations", "3")

    assert result.exit_code == 0, result.output
    for text in ("colour.onnx", "pretext.onnx", "layout", "p50 ms", "p99 ms", "images/s",
                 "vs first", "onnxruntime", "fp32", "CPU"):
        assert text in result.stdout


@pytest.mark.parametrize("sizes", ["1,x", "0", "", "8,-1"])
def test_bad_batch_sizes_are_usage_errors(models: tuple[Path, Path], sizes: str) -> None:
    result = invoke(models[0], "--batch-sizes", sizes)

    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # the message is boxed and wrapped
    assert "comma-separated list of positive integers" in words


def test_unusable_model_is_named(tmp_path: Path, models: tuple[Path, Path]) -> None:
    bad = onnx_models.not_onnx(tmp_path / "bad.onnx")

    result = invoke(models[0], bad, "--iterations", "1")

    assert result.exit_code == 1
    assert "bad.onnx: not an ONNX model" in result.stderr


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="iterations"):
        BenchConfig((Path("m.onnx"),), iterations=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        BenchConfig((Path("m.onnx"),), batch_sizes=())


def test_x86_features() -> None:
    name, flags = parse_cpuinfo(X86)

    assert name == "AMD EPYC 9R14 96-Core Processor"
    assert {"avx2", "avx512f", "avx512_vnni"} <= flags


def test_arm_features(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(ARM)

    info = cpu_info(tmp_path / "cpuinfo")

    assert info.name == "Raspberry Pi 5 Model B Rev 1.0"
    assert info.features == ("NEON", "DotProd")


def test_cpu_info_without_proc_degrades_gracefully(tmp_path: Path) -> None:
    info = cpu_info(tmp_path / "missing")

    assert info.features == ()
    assert info.name and info.logical_cores >= 1
