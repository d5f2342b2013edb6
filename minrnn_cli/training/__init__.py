"""The training loop and what it needs: settings checks, device, optimiser and schedule, checkpoints."""
