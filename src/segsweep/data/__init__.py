"""Datasets: the class description, the synthetic scene generator and its datamodule."""
