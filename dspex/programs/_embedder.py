"""``Embedder`` in the programs layer: DSPy's ``dspy.Embedder``, defined with the LM stack.

Model ids reach their embeddings endpoint through the runtime's LM clients,
so the class lives in ``dspex.actors._lm._embedder``; this module keeps the
programs layer's name for it (``KNN`` and ``KNNFewShot`` take one).
"""

from dspex.actors._lm._embedder import Embedder

__all__ = ["Embedder"]
