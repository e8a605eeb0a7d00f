"""Strategies: one file each, all implementing harness.strategy.Strategy; chosen only through Hydra `_target_`."""
