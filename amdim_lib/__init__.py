"""AMDIM workbook library.

core/ holds the method (views, encoder, objectives, mixture, MI bounds); data/, run/, analysis/ and ui/
load, train, evaluate and show it. The names a user reaches for first are here.
"""

from .official import load_encoder
from .run.presets import Config, get_config
from .run.train import train

__all__ = ["Config", "get_config", "load_encoder", "train"]
__version__ = "0.1.0"
