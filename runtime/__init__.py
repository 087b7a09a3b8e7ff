"""edge_ssl.runtime: run exported models with onnxruntime alone, never TensorFlow.

`model` opens a model and reads its metadata, `parallel` runs it on one or more sessions with a
batch split among them, `decode` reads image files on threads, `classify` labels files and
folders and `output` streams its rows, `evaluate` measures models on labelled images
(`labelled` finds them, `metrics` and `confusion_png` score and draw them), `latency` times
models (`litert` their LiteRT twins: the one path that needs TensorFlow, to convert), `serve`
answers HTTP requests in batches (`batching`) and `cpu` describes the processor. The runtime
returns results and never prints: the CLI draws them (edge_ssl/commands/render_runtime.py).
Nothing is imported here, so that the CLI can import the runtime's configs for its options and
still start at once.
"""
