"""Multi-task fine-tuning (``taskfold.train``): data, the shapes world, encoders and the training loop."""
