"""LoRA fine-tuning on a person's own images: data, supervision, recipes, training, evaluation."""
