"""gbcli: GPT-style and BERT-style transformers side by side in the terminal."""

__version__ = "0.1.0"
