"""snaketune: hyperparameter tuning for LLM fine-tuning as a Snakemake workflow."""
