"""The `edge-ssl` command: a thin shell over the stages, one module per command.

Command modules import only the standard library, typer and rich at module level; TensorFlow,
tf2onnx and onnxruntime are imported inside the commands that use them, so `--help` is instant.
"""

from __future__ import annotations

import typer

from edge_ssl.commands import (
    bench,
    classify,
    demo,
    demo_data,
    evaluate,
    export,
    finetune,
    study,
    train,
)

app = typer.Typer(
    name="edge-ssl",
    help="Unlabeled images → rotation-pretrained MobileNetV2 → verified ONNX → edge inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train.train)
app.command("finetune")(finetune.finetune)
app.command("study")(study.study)
app.command("demo-data")(demo_data.demo_data)
app.command("export")(export.export)
app.command("classify")(classify.classify)
app.command("evaluate")(evaluate.evaluate)
app.command("bench")(bench.bench)
app.command("demo")(demo.demo)


def main() -> None:
    app()
