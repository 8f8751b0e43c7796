"""The method, and only it: views, the encoder, the multiscale NCE objective, the mixture head, MI bounds.

Pure PyTorch (and numpy): no files, plots, devices or kernel choices. Read in this order:
views -> encoder -> geometry -> objectives -> reference -> mixture -> bounds (README: "Reading the method").
"""
