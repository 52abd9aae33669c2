"""lightning-selfalign: a code LLM teaches itself, on PyTorch Lightning.

Importing the package is cheap: heavy pieces (torch, transformers, vllm, ray) load in the modules that use them.
"""

__version__ = "0.1.0"
