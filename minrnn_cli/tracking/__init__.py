"""Where results go: metrics.jsonl and results.json (the source of truth), W&B, rich output."""
