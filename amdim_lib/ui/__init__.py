"""Showing it: figures, ipywidgets inspectors, the notebooks' prose and exercises, the HTML report."""
