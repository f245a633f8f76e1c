"""taskfold: upcycle a text-to-image diffusion UNet into one multi-task model (MTU, DTR)
and export one plain, iso-FLOP graph per task.

The top-level folders of the repository are mapped into this package:
``upcycle/`` is ``taskfold.upcycle``.
"""

__version__ = "0.1.0"
