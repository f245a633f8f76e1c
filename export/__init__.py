"""Fold and export (``taskfold.export``): one plain ONNX / CoreML / TensorRT graph per task.

- :mod:`.fold` -- ``fold(mtu, task)``: a task's router output folded into dense FFNs (a stock UNet).
- :mod:`.graph` -- graph specs (names, shapes, dtypes) and the modules traced for them.
- :mod:`.onnx`, :mod:`.coreml`, :mod:`.tensorrt` -- the converters.
- :mod:`.formats` -- one exporter per format working from an ``ExportJob``.
- :mod:`.parity` -- the parity gate (DESIGN.md invariant 8).
- :mod:`.flops` -- FLOPs counted from an ONNX graph.
- :mod:`.encoders` -- text encoder, tokenizer and codec graphs.
- :mod:`.package` -- ``export_package``: the package folder and its manifest.
"""
