"""Fold and export (``taskfold.export``): one plain ONNX / CoreML / TensorRT graph per task.

Built in the fold-and-export stage; this package holds nothing yet.
"""
