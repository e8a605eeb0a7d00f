"""The report layer, pure: terminal tables, report.md/.html, plots, learning curves, run comparison, sweeps."""
