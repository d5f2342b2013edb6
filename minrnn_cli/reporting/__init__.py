"""`minrnn report`: every run's results.json in one table beside the paper's figures, and training curves."""
