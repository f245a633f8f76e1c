"""Benchmarks (``taskfold.benchmarks``): what the project's claims rest on, measured.

- :mod:`.bench` / :mod:`.contenders` / :mod:`.report` -- ``taskfold bench``: FLOPs and
  interleaved latency of the base, folded and unfolded graphs and PyTorch eager.
- :mod:`.evaluate` -- ``taskfold evaluate``: a package's tasks scored on held-out rows.
- :mod:`.mtu_table` -- MTU against single-task fine-tunes, DTR against plain pretraining.
- :mod:`.runtime_memory` -- resident memory of opening a package's tasks.
- :mod:`.machine` -- the machine's description and matmul peak.
"""
