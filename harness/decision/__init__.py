"""The decision layer, pure: paired statistics and intervals, cost, the choice rule, the verdict and its caveats."""
