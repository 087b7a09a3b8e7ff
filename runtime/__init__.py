"""edge_ssl.runtime: run exported models with onnxruntime alone, never TensorFlow.

`model` opens a model and reads its metadata, `decode` reads image files on threads, `classify`
labels files and folders and `output` streams its rows, `bench` times models, `cpu` describes
the processor, `report` draws the tables. Nothing is imported here, so
that the CLI can import `edge_ssl.runtime.model` for its option choices and still start at once.
"""
