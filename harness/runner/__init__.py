from harness.runner.recipe import Runner, embedding_cosines, score_strategy

__all__ = ["Runner", "embedding_cosines", "score_strategy"]
