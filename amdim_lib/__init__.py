"""AMDIM workbook library: encoder, multiscale NCE objective, views, data, training and evaluation."""

from .official import load_encoder

__all__ = ["load_encoder"]
__version__ = "0.1.0"
