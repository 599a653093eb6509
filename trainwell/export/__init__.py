"""Taking a trained model out of trainwell into other ecosystems' formats (``hf``: transformers)."""
