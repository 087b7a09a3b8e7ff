"""edge_ssl.export: Keras models → verified ONNX files with the preprocessing inside.

`edge_ssl.export.config` is light (standard library only); the other modules import TensorFlow,
tf2onnx, onnx or onnxruntime, so the CLI imports them inside the command.
"""
