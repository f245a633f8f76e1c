"""The thin runtime (``taskfold.runtime``): run every task from an exported package.

Built in the runtime stage; this package holds nothing yet.
"""
