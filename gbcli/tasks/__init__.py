"""Pure computations, one module per capability: text and loaded models in, dataclasses of numbers out."""
