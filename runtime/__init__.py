"""The thin runtime (``taskfold.runtime``): run every task from an exported package.

- :mod:`.package` -- :func:`open_package` / :class:`Package`: sessions per task graph,
  shared backbone weights, ``generate`` for every task (numpy, onnxruntime, Pillow only).
- :mod:`.schedulers` -- DDIM and Euler in numpy, step for step equal to diffusers'.
- :mod:`.guidance` -- none, text CFG and InstructPix2Pix dual guidance.
- :mod:`.tokenizers` -- the tiny WordLevel and CLIP BPE tokenizers without ``tokenizers``.
- :mod:`.manifest` -- the manifest's schema, checked before anything trusts it.
- :mod:`.reader` -- :class:`~.reader.PackageReader`, the one way into a package: confined
  paths, listed files only, byte ranges, hashes, the closure ``taskfold verify`` checks.
- :mod:`.onnx_refs` -- the external-data references of an ONNX graph, read from the protobuf.
- :mod:`.images` -- PNG in and out, the training data's conventions.
- :mod:`.cli_run` -- ``taskfold run``.

Nothing here imports torch or diffusers at module level; the CoreML and TensorRT backends
load their own toolkits when asked for.
"""


from .package import Package, open_package  # noqa: E402,F401
