"""Running the method: configurations and presets, factories, the training loop (devices, precision,
DDP, online probes), the supervised baseline, the memory estimate, run folders and checkpoints, and the
CPU speed rules applied from outside core/."""
