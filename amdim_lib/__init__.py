"""AMDIM workbook library: encoder, multiscale NCE objective, views, data, training and evaluation."""

__version__ = "0.1.0"
