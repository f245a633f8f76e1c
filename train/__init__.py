"""Multi-task fine-tuning (``taskfold.train``): data, the shapes world, encoders and the training loop.

Data, all numpy + Pillow (no torch):

- :mod:`.data` -- the dataset format (a folder with ``metadata.jsonl``; the columns of a row
  follow from its task's definition, :mod:`taskfold.tasks`), ``check_dataset`` (every bad row with its line number) and
  ``load_dataset`` (float32 CHW arrays in [-1, 1]).
- :mod:`.shapes` -- ``make_shapes``: a deterministic dataset of coloured circles, squares
  and triangles for all five tasks, written atomically.
- :mod:`.analyser` -- ``analyse`` / ``t2i_pass``: names the shape, colour and size of a
  shapes-world image from its pixels, with no learned weights.
- :mod:`.metrics` -- PSNR and SSIM (Wang et al. 2004).
- :mod:`.cli_data` -- the ``taskfold data make-shapes`` / ``taskfold data check`` commands.
"""
