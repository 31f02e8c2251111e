"""Model card templates (Jinja, rendered through huggingface_hub.ModelCard by hf_time.cards)."""
