"""edge_ssl.runtime: run exported models with onnxruntime alone, never TensorFlow (design §9).

`model` opens a model and reads its metadata, `classify` labels files and folders, `bench` times
models, `cpu` describes the processor, `report` draws the tables. Nothing is imported here, so
that the CLI can import `edge_ssl.runtime.model` for its option choices and still start at once.
"""
