"""Model commands: train and evaluation."""
