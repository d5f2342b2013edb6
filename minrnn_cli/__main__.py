"""`python -m minrnn_cli ...` is `minrnn ...`."""

from minrnn_cli.cli import main

main()
