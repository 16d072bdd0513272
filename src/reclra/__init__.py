"""reclra — training neural networks without backpropagation.

Recursive local representation alignment (rec-LRA), LRA, and the standard baselines (backprop,
feedback alignment, direct feedback alignment) with one interface: a rule writes update
directions into ``.grad`` and a stock ``torch.optim`` optimizer applies them.
"""

from reclra import activations, functional, layers, models, pathway, rules

__all__ = ["activations", "functional", "layers", "models", "pathway", "rules"]
__version__ = "0.1.0"
