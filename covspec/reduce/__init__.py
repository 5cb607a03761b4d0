"""Visual-token reduction on the drafter (DESIGN.md §3): which of an image's tokens the drafter reads.

Training-free reducers behind one interface (``base.Reducer``: visual features and the prompt's embeddings and a
``Budget`` in, the kept indices and their features out), pure numpy so every engine applies them: ``covspec`` (query
relevance, token activity, low-rank dependency), ``pool``, ``random``, ``merge`` and ``elastic``
(``reducers``); ``apply.reduce_prompt`` places the kept ones in a rendered prompt for the engines. Reduction on the
drafter never changes the output: the target still reads every token.
"""

from covspec.reduce.apply import ReducedPrompt, TokenReduction, reduce_prompt
from covspec.reduce.base import Budget, Reducer, Reduction
from covspec.reduce.reducers import REDUCERS, reducer_named

__all__ = [
    "REDUCERS",
    "Budget",
    "ReducedPrompt",
    "Reducer",
    "Reduction",
    "TokenReduction",
    "reduce_prompt",
    "reducer_named",
]
