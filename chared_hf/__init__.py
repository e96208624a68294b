"""chared_hf: character-wise (byte-wise) ensembles of causal LMs with different tokenizers.

CharED (Gu et al., arXiv 2407.11009) as a Hugging Face Transformers model. Scoring and EM
weights live in ``chared_hf.scoring``, HumanEval/GSM8K in ``chared_hf.tasks``, the command line
in ``chared_hf.cli``.
"""

from .configuration import CharEDConfig
from .decoding.cache import EnsembleCache
from .demo import load_demo
from .members.token_bytes import TokenBytes
from .modeling import CharEDModel
from .tokenization import ByteTokenizer
from .tools.attribution import Attribution, attribute
from .tools.plotting import plot_attribution

__all__ = ["Attribution", "ByteTokenizer", "CharEDConfig", "CharEDModel", "EnsembleCache",
           "TokenBytes", "attribute", "load_demo", "plot_attribution"]
__version__ = "0.1.0"
