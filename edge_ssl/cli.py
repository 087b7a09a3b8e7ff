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
    serve,
    study,
    study_summary,
    train,
    web,
)
from edge_ssl.commands.help_format import HelpFormat, HelpFormatGroup

app = typer.Typer(
    name="edge-ssl",
    help="Unlabeled images → rotation-pretrained MobileNetV2 → verified ONNX → edge inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpFormatGroup,
)
app.command("demo", cls=HelpFormat)(demo.demo)
app.command("train", cls=HelpFormat)(train.train)
app.command("finetune", cls=HelpFormat)(finetune.finetune)
app.command("study", cls=HelpFormat)(study.study)
app.command("study-summary", cls=HelpFormat)(study_summary.study_summary)
app.command("demo-data", cls=HelpFormat)(demo_data.demo_data)
app.command("export", cls=HelpFormat)(export.export)
app.command("classify", cls=HelpFormat)(classify.classify)
app.command("evaluate", cls=HelpFormat)(evaluate.evaluate)
app.command("bench", cls=HelpFormat)(bench.bench)
app.command("serve", cls=HelpFormat)(serve.serve)
app.command("web", cls=HelpFormat)(web.web)


def main() -> None:
    app()
