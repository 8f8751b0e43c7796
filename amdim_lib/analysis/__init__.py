"""Analysing trained encoders: frozen-feature probes and kNN, label efficiency, segmentation maps,
ablation sweeps, the MI-bound benchmark and the results tables."""
